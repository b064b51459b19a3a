;; The affine export's passes in WebAssembly (src/quant/kernels/affine.ts drives them): for one grid per
;; tensor, in SIMD, the range [min(0, w), max(0, w)], then the codes round(w / scale) + zeroPoint, clamped,
;; with the report's error sums of ŵ = float32(code · scale + min); for per-channel grids, the codes, ŵ, its
;; float16 rounding and the error sums of both. The arithmetic is the JS affine module's, step for step in
;; float64 (no fused multiply-add), and the sums are added one weight at a time in index order, so codes and
;; figures are bit for bit those of src/quant/methods/affine.ts and tensorError. Two weights go through the
;; vector units at once; only the running sums are scalar, which keeps the order (four accumulators of a
;; vector pair each, added lane by lane, measured 55 ms on 16M weights here against 150 ms for the JS loop).
;;
;; `npm run build:wasm` assembles this into affine-wasm.ts; test/quant/kernels/affine.test.ts checks that
;; file is this one assembled.
(module
  (import "env" "memory" (memory 1 65536 shared))

  ;; min(0, w) and max(0, w) over `n` float32 values at `src`, the minimum NaN when a value is NaN (pmin and
  ;; pmax, compare and select, would skip it; a lane mask of w ≠ w keeps it). ±Infinity comes through as the
  ;; range. −0 never replaces the starting +0, as Math.min's −0 is turned into +0 by the JS scan.
  (func (export "range") (param $src i32) (param $n i32) (result f64 f64)
    (local $lo v128) (local $hi v128) (local $w v128) (local $nan v128) (local $end i32) (local $x f32)
    (local $low f32) (local $high f32) (local $isNaN i32)
    (local.set $end (i32.add (local.get $src) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (block $vectors_done
      (loop $vectors
        (br_if $vectors_done (i32.ge_u (local.get $src) (local.get $end)))
        (local.set $w (v128.load (local.get $src)))
        (local.set $lo (f32x4.pmin (local.get $lo) (local.get $w)))
        (local.set $hi (f32x4.pmax (local.get $hi) (local.get $w)))
        (local.set $nan (v128.or (local.get $nan) (f32x4.ne (local.get $w) (local.get $w))))
        (local.set $src (i32.add (local.get $src) (i32.const 16)))
        (br $vectors)))
    (local.set $low
      (f32.min
        (f32.min (f32x4.extract_lane 0 (local.get $lo)) (f32x4.extract_lane 1 (local.get $lo)))
        (f32.min (f32x4.extract_lane 2 (local.get $lo)) (f32x4.extract_lane 3 (local.get $lo)))))
    (local.set $high
      (f32.max
        (f32.max (f32x4.extract_lane 0 (local.get $hi)) (f32x4.extract_lane 1 (local.get $hi)))
        (f32.max (f32x4.extract_lane 2 (local.get $hi)) (f32x4.extract_lane 3 (local.get $hi)))))
    (local.set $end (i32.add (local.get $end) (i32.shl (i32.and (local.get $n) (i32.const 3)) (i32.const 2))))
    (block $tail_done
      (loop $tail
        (br_if $tail_done (i32.ge_u (local.get $src) (local.get $end)))
        (local.set $x (f32.load (local.get $src)))
        (local.set $low (select (local.get $x) (local.get $low) (f32.lt (local.get $x) (local.get $low))))
        (local.set $high (select (local.get $x) (local.get $high) (f32.gt (local.get $x) (local.get $high))))
        (local.set $isNaN (i32.or (local.get $isNaN) (f32.ne (local.get $x) (local.get $x))))
        (local.set $src (i32.add (local.get $src) (i32.const 4)))
        (br $tail)))
    (local.set $isNaN (i32.or (local.get $isNaN) (v128.any_true (local.get $nan))))
    (select (f64.const nan) (f64.promote_f32 (local.get $low)) (local.get $isNaN))
    (f64.promote_f32 (local.get $high)))

  ;; Codes of `n` float32 values at `src` into `dst` (uint8, or uint16 when `wide`), code = clamp(trunc(w ·
  ;; inverse + offset)) with offset = zeroPoint + ½, and the error sums carried in and out, so a tensor may
  ;; be done in pieces with the same result. `dst` may be `src`: each step reads its two values before it
  ;; writes their codes, which are narrower, so the codes overwrite only values already read.
  (func (export "quantize")
      (param $src i32) (param $dst i32) (param $n i32) (param $wide i32)
      (param $inverse f64) (param $offset f64) (param $minCode i32) (param $maxCode i32)
      (param $scale f64) (param $min f64)
      (param $err f64) (param $sig f64) (param $rec f64) (param $dot f64) (param $maxAbs f64)
      (result f64 f64 f64 f64 f64)
    (local $end i32) (local $w v128) (local $c v128) (local $q v128) (local $e v128) (local $t v128)
    (local $inverse2 v128) (local $offset2 v128) (local $scale2 v128) (local $min2 v128)
    (local $minCode4 v128) (local $maxCode4 v128) (local $maxAbs2 v128)
    (local $x f64) (local $code i32) (local $y f64) (local $d f64)
    (local.set $inverse2 (f64x2.splat (local.get $inverse)))
    (local.set $offset2 (f64x2.splat (local.get $offset)))
    (local.set $scale2 (f64x2.splat (local.get $scale)))
    (local.set $min2 (f64x2.splat (local.get $min)))
    (local.set $minCode4 (i32x4.splat (local.get $minCode)))
    (local.set $maxCode4 (i32x4.splat (local.get $maxCode)))
    (local.set $maxAbs2 (f64x2.splat (local.get $maxAbs)))
    (local.set $end (i32.add (local.get $src) (i32.shl (i32.and (local.get $n) (i32.const -2)) (i32.const 2))))
    (block $pairs_done
      (loop $pairs
        (br_if $pairs_done (i32.ge_u (local.get $src) (local.get $end)))
        (local.set $w (f64x2.promote_low_f32x4 (v128.load64_zero (local.get $src))))
        (local.set $c
          (i32x4.min_s
            (i32x4.max_s
              (i32x4.trunc_sat_f64x2_s_zero
                (f64x2.add (f64x2.mul (local.get $w) (local.get $inverse2)) (local.get $offset2)))
              (local.get $minCode4))
            (local.get $maxCode4)))
        (if (local.get $wide)
          (then
            (v128.store32_lane 0 (local.get $dst) (i16x8.narrow_i32x4_u (local.get $c) (local.get $c)))
            (local.set $dst (i32.add (local.get $dst) (i32.const 4))))
          (else
            (v128.store16_lane 0 (local.get $dst)
              (i8x16.narrow_i16x8_u
                (i16x8.narrow_i32x4_u (local.get $c) (local.get $c))
                (i16x8.narrow_i32x4_u (local.get $c) (local.get $c))))
            (local.set $dst (i32.add (local.get $dst) (i32.const 2)))))
        (local.set $q
          (f64x2.promote_low_f32x4
            (f32x4.demote_f64x2_zero
              (f64x2.add (f64x2.mul (f64x2.convert_low_i32x4_s (local.get $c)) (local.get $scale2)) (local.get $min2)))))
        (local.set $e (f64x2.sub (local.get $w) (local.get $q)))
        (local.set $maxAbs2 (f64x2.pmax (local.get $maxAbs2) (f64x2.abs (local.get $e))))
        (local.set $t (f64x2.mul (local.get $e) (local.get $e)))
        (local.set $err
          (f64.add (f64.add (local.get $err) (f64x2.extract_lane 0 (local.get $t))) (f64x2.extract_lane 1 (local.get $t))))
        (local.set $t (f64x2.mul (local.get $w) (local.get $w)))
        (local.set $sig
          (f64.add (f64.add (local.get $sig) (f64x2.extract_lane 0 (local.get $t))) (f64x2.extract_lane 1 (local.get $t))))
        (local.set $t (f64x2.mul (local.get $q) (local.get $q)))
        (local.set $rec
          (f64.add (f64.add (local.get $rec) (f64x2.extract_lane 0 (local.get $t))) (f64x2.extract_lane 1 (local.get $t))))
        (local.set $t (f64x2.mul (local.get $w) (local.get $q)))
        (local.set $dot
          (f64.add (f64.add (local.get $dot) (f64x2.extract_lane 0 (local.get $t))) (f64x2.extract_lane 1 (local.get $t))))
        (local.set $src (i32.add (local.get $src) (i32.const 8)))
        (br $pairs)))
    (local.set $maxAbs (f64.max (f64x2.extract_lane 0 (local.get $maxAbs2)) (f64x2.extract_lane 1 (local.get $maxAbs2))))
    (if (i32.and (local.get $n) (i32.const 1))
      (then
        (local.set $x (f64.promote_f32 (f32.load (local.get $src))))
        (local.set $code
          (i32.trunc_sat_f64_s (f64.add (f64.mul (local.get $x) (local.get $inverse)) (local.get $offset))))
        (local.set $code
          (select (local.get $minCode) (local.get $code) (i32.lt_s (local.get $code) (local.get $minCode))))
        (local.set $code
          (select (local.get $maxCode) (local.get $code) (i32.gt_s (local.get $code) (local.get $maxCode))))
        (if (local.get $wide)
          (then (i32.store16 (local.get $dst) (local.get $code)))
          (else (i32.store8 (local.get $dst) (local.get $code))))
        (local.set $y
          (f64.promote_f32
            (f32.demote_f64 (f64.add (f64.mul (f64.convert_i32_s (local.get $code)) (local.get $scale)) (local.get $min)))))
        (local.set $d (f64.sub (local.get $x) (local.get $y)))
        (local.set $err (f64.add (local.get $err) (f64.mul (local.get $d) (local.get $d))))
        (local.set $sig (f64.add (local.get $sig) (f64.mul (local.get $x) (local.get $x))))
        (local.set $rec (f64.add (local.get $rec) (f64.mul (local.get $y) (local.get $y))))
        (local.set $dot (f64.add (local.get $dot) (f64.mul (local.get $x) (local.get $y))))
        (local.set $maxAbs (f64.max (local.get $maxAbs) (f64.abs (local.get $d))))))
    (local.get $err) (local.get $sig) (local.get $rec) (local.get $dot) (local.get $maxAbs))

  ;; Per-channel [min(0, w), max(0, w)] of `rows` rows of `channels` float32 values at `src`, folded into the
  ;; float32 arrays at `lo` and `hi` (which start at 0). min/max as Math.min/max: a NaN wins, −0 < +0.
  (func (export "channelRanges") (param $src i32) (param $rows i32) (param $channels i32) (param $lo i32) (param $hi i32)
    (local $row i32) (local $c i32) (local $vectorChannels i32) (local $w v128) (local $x f32) (local $at i32)
    (local.set $vectorChannels (i32.and (local.get $channels) (i32.const -4)))
    (block $rows_done
      (loop $next_row
        (br_if $rows_done (i32.ge_u (local.get $row) (local.get $rows)))
        (local.set $c (i32.const 0))
        (block $vectors_done
          (loop $vectors
            (br_if $vectors_done (i32.ge_u (local.get $c) (local.get $vectorChannels)))
            (local.set $w (v128.load (local.get $src)))
            (local.set $at (i32.shl (local.get $c) (i32.const 2)))
            (v128.store (i32.add (local.get $lo) (local.get $at))
              (f32x4.min (v128.load (i32.add (local.get $lo) (local.get $at))) (local.get $w)))
            (v128.store (i32.add (local.get $hi) (local.get $at))
              (f32x4.max (v128.load (i32.add (local.get $hi) (local.get $at))) (local.get $w)))
            (local.set $src (i32.add (local.get $src) (i32.const 16)))
            (local.set $c (i32.add (local.get $c) (i32.const 4)))
            (br $vectors)))
        (block $tail_done
          (loop $tail
            (br_if $tail_done (i32.ge_u (local.get $c) (local.get $channels)))
            (local.set $x (f32.load (local.get $src)))
            (local.set $at (i32.shl (local.get $c) (i32.const 2)))
            (f32.store (i32.add (local.get $lo) (local.get $at))
              (f32.min (f32.load (i32.add (local.get $lo) (local.get $at))) (local.get $x)))
            (f32.store (i32.add (local.get $hi) (local.get $at))
              (f32.max (f32.load (i32.add (local.get $hi) (local.get $at))) (local.get $x)))
            (local.set $src (i32.add (local.get $src) (i32.const 4)))
            (local.set $c (i32.add (local.get $c) (i32.const 1)))
            (br $tail)))
        (local.set $row (i32.add (local.get $row) (i32.const 1)))
        (br $next_row))))

  ;; The half (binary16) bit pattern of a float32 given by its bits, rounded to nearest even, overflow to the
  ;; largest finite half: src/quant/float16.ts halfOfFloat32Bits, step for step.
  (func $halfOfFloat32Bits (param $word i32) (result i32)
    (local $sign i32) (local $magnitude i32) (local $rebiased i32) (local $half i32) (local $shift i32)
    (local $significand i32)
    (local.set $sign (i32.and (i32.shr_u (local.get $word) (i32.const 16)) (i32.const 0x8000)))
    (local.set $magnitude (i32.and (local.get $word) (i32.const 0x7fffffff)))
    (if (i32.ge_u (local.get $magnitude) (i32.const 0x38800000))
      (then
        (if (i32.ge_u (local.get $magnitude) (i32.const 0x7f800000))
          (then
            (local.set $half
              (select (i32.const 0x7c00) (i32.const 0x7e00)
                (i32.eq (local.get $magnitude) (i32.const 0x7f800000)))))
          (else
            (local.set $rebiased (i32.sub (local.get $magnitude) (i32.const 0x38000000)))
            (local.set $half
              (i32.shr_u
                (i32.add (i32.add (local.get $rebiased) (i32.const 0xfff))
                  (i32.and (i32.shr_u (local.get $rebiased) (i32.const 13)) (i32.const 1)))
                (i32.const 13)))
            (if (i32.gt_u (local.get $half) (i32.const 0x7bff)) (then (local.set $half (i32.const 0x7bff)))))))
      (else
        (local.set $shift (i32.sub (i32.const 126) (i32.shr_u (local.get $magnitude) (i32.const 23))))
        (if (i32.le_u (local.get $shift) (i32.const 24))
          (then
            (local.set $significand (i32.or (i32.and (local.get $magnitude) (i32.const 0x7fffff)) (i32.const 0x800000)))
            (local.set $half
              (i32.shr_u
                (i32.add
                  (i32.sub
                    (i32.add (local.get $significand) (i32.shl (i32.const 1) (i32.sub (local.get $shift) (i32.const 1))))
                    (i32.const 1))
                  (i32.and (i32.shr_u (local.get $significand) (local.get $shift)) (i32.const 1)))
                (local.get $shift)))))))
    (i32.or (local.get $sign) (local.get $half)))

  ;; The exact float32 value of a half bit pattern (the decoder's table, src/quant/packed/decode-tensor.ts).
  (func $halfToFloat (param $half i32) (result f32)
    (local $exponent i32) (local $mantissa i32) (local $sign i32)
    (local.set $sign (i32.shl (i32.and (local.get $half) (i32.const 0x8000)) (i32.const 16)))
    (local.set $exponent (i32.and (i32.shr_u (local.get $half) (i32.const 10)) (i32.const 0x1f)))
    (local.set $mantissa (i32.and (local.get $half) (i32.const 0x3ff)))
    (if (result f32) (i32.eqz (local.get $exponent))
      (then
        ;; Subnormal: mantissa · 2^−24, exact in float32.
        (f32.reinterpret_i32
          (i32.or (local.get $sign)
            (i32.reinterpret_f32 (f32.mul (f32.convert_i32_u (local.get $mantissa)) (f32.const 0x1p-24))))))
      (else
        (f32.reinterpret_i32
          (i32.or (i32.or (local.get $sign) (i32.shl (local.get $mantissa) (i32.const 13)))
            (i32.shl
              (select (i32.const 255) (i32.add (local.get $exponent) (i32.const 112))
                (i32.eq (local.get $exponent) (i32.const 31)))
              (i32.const 23)))))))

  ;; Per-channel grids: `count` float32 values at `src` whose channel runs over the last axis (`channels`
  ;; of them, the first value's channel `firstChannel`), each channel's 1/scale, zeroPoint + ½, scale and min
  ;; as four float64 arrays at `grids`. Writes the codes at `codesDst` (uint8, or uint16 when `wide`), ŵ as
  ;; float32 at `dequantizedDst` (which may be `src`: each value is read before its ŵ is written) and its
  ;; float16 bits at `halvesDst`; the error sums of ŵ and of the float16 ŵ are carried in and out, in index
  ;; order (src/quant/export-affine.ts's JS loop, the signal energy shared).
  (func (export "quantizeChannels")
      (param $src i32) (param $codesDst i32) (param $dequantizedDst i32) (param $halvesDst i32)
      (param $count i32) (param $channels i32) (param $firstChannel i32) (param $grids i32) (param $wide i32)
      (param $minCode i32) (param $maxCode i32)
      (param $sig f64) (param $err f64) (param $rec f64) (param $dot f64) (param $maxAbs f64)
      (param $halfErr f64) (param $halfRec f64) (param $halfDot f64) (param $halfMaxAbs f64)
      (result f64 f64 f64 f64 f64 f64 f64 f64 f64)
    (local $i i32) (local $c i32) (local $at i32) (local $x f64) (local $code i32) (local $dequantized f32)
    (local $q f64) (local $half i32) (local $h f64) (local $d f64) (local $channelBytes i32)
    (local $pairsEnd i32) (local $w2 v128) (local $c4 v128) (local $dequantized4 v128) (local $q2 v128)
    (local $magnitude4 v128) (local $sign4 v128) (local $h4 v128) (local $h2 v128) (local $t v128)
    (local $minCode4 v128) (local $maxCode4 v128) (local $maxAbs2 v128) (local $halfMaxAbs2 v128)
    (local.set $c (local.get $firstChannel))
    (local.set $channelBytes (i32.shl (local.get $channels) (i32.const 3)))
    ;; Two weights of neighbouring channels at a time when no pair straddles a row (an even channel count
    ;; from an even channel): the codes, ŵ and its float16 rounding in vectors, the sums in index order.
    ;; float16 rounding: adding and subtracting C = ±2^(max(e, −14) + 13), e the exponent of ŵ, leaves ŵ
    ;; rounded to nearest even at 11 significant bits (or at 2^−24 below 2^−14), which is what
    ;; halfOfFloat32Bits computes on the bits; beyond the largest half it clamps to 65504 as that does.
    (if (i32.eqz (i32.and (i32.or (local.get $channels) (local.get $firstChannel)) (i32.const 1)))
      (then (local.set $pairsEnd (i32.and (local.get $count) (i32.const -2)))))
    (local.set $minCode4 (i32x4.splat (local.get $minCode)))
    (local.set $maxCode4 (i32x4.splat (local.get $maxCode)))
    (local.set $maxAbs2 (f64x2.splat (local.get $maxAbs)))
    (local.set $halfMaxAbs2 (f64x2.splat (local.get $halfMaxAbs)))
    (block $pairs_done
      (loop $pairs
        (br_if $pairs_done (i32.ge_u (local.get $i) (local.get $pairsEnd)))
        (local.set $w2 (f64x2.promote_low_f32x4 (v128.load64_zero (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2))))))
        (local.set $at (i32.add (local.get $grids) (i32.shl (local.get $c) (i32.const 3))))
        (local.set $c4
          (i32x4.min_s
            (i32x4.max_s
              (i32x4.trunc_sat_f64x2_s_zero
                (f64x2.add
                  (f64x2.mul (local.get $w2) (v128.load (local.get $at)))
                  (v128.load (i32.add (local.get $at) (local.get $channelBytes)))))
              (local.get $minCode4))
            (local.get $maxCode4)))
        (if (local.get $wide)
          (then
            (v128.store32_lane 0 (i32.add (local.get $codesDst) (i32.shl (local.get $i) (i32.const 1)))
              (i16x8.narrow_i32x4_u (local.get $c4) (local.get $c4))))
          (else
            (v128.store16_lane 0 (i32.add (local.get $codesDst) (local.get $i))
              (i8x16.narrow_i16x8_u
                (i16x8.narrow_i32x4_u (local.get $c4) (local.get $c4))
                (i16x8.narrow_i32x4_u (local.get $c4) (local.get $c4))))))
        (local.set $dequantized4
          (f32x4.demote_f64x2_zero
            (f64x2.add
              (f64x2.mul (f64x2.convert_low_i32x4_s (local.get $c4))
                (v128.load (i32.add (local.get $at) (i32.shl (local.get $channelBytes) (i32.const 1)))))
              (v128.load (i32.add (local.get $at) (i32.mul (local.get $channelBytes) (i32.const 3)))))))
        (v128.store64_lane 0 (i32.add (local.get $dequantizedDst) (i32.shl (local.get $i) (i32.const 2)))
          (local.get $dequantized4))
        (local.set $q2 (f64x2.promote_low_f32x4 (local.get $dequantized4)))
        (local.set $sign4 (v128.and (local.get $dequantized4) (v128.const i32x4 0x80000000 0x80000000 0x80000000 0x80000000)))
        (local.set $t
          (v128.or (local.get $sign4)
            (i32x4.add
              (i32x4.max_u
                (v128.and (local.get $dequantized4) (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000))
                (v128.const i32x4 0x38800000 0x38800000 0x38800000 0x38800000))
              (v128.const i32x4 0x06800000 0x06800000 0x06800000 0x06800000))))
        (local.set $h4 (f32x4.sub (f32x4.add (local.get $dequantized4) (local.get $t)) (local.get $t)))
        (local.set $h4
          (v128.or (local.get $sign4)
            (f32x4.min (f32x4.abs (local.get $h4)) (v128.const f32x4 65504 65504 65504 65504))))
        ;; The half bits of that exact value: rebiased bits when normal, the multiple of 2^−24 when not.
        (local.set $magnitude4 (v128.and (local.get $h4) (v128.const i32x4 0x7fffffff 0x7fffffff 0x7fffffff 0x7fffffff)))
        (local.set $t
          (v128.or
            (i32x4.shr_u (local.get $sign4) (i32.const 16))
            (v128.bitselect
              (i32x4.shr_u (i32x4.sub (local.get $magnitude4) (v128.const i32x4 0x38000000 0x38000000 0x38000000 0x38000000)) (i32.const 13))
              (i32x4.trunc_sat_f32x4_u (f32x4.mul (local.get $magnitude4) (v128.const f32x4 0x1p24 0x1p24 0x1p24 0x1p24)))
              (i32x4.ge_u (local.get $magnitude4) (v128.const i32x4 0x38800000 0x38800000 0x38800000 0x38800000)))))
        (v128.store32_lane 0 (i32.add (local.get $halvesDst) (i32.shl (local.get $i) (i32.const 1)))
          (i16x8.narrow_i32x4_u (local.get $t) (local.get $t)))
        (local.set $h2 (f64x2.promote_low_f32x4 (local.get $h4)))
        (local.set $t (f64x2.mul (local.get $w2) (local.get $w2)))
        (local.set $sig
          (f64.add (f64.add (local.get $sig) (f64x2.extract_lane 0 (local.get $t))) (f64x2.extract_lane 1 (local.get $t))))
        (local.set $t (f64x2.sub (local.get $w2) (local.get $q2)))
        (local.set $maxAbs2 (f64x2.pmax (local.get $maxAbs2) (f64x2.abs (local.get $t))))
        (local.set $t (f64x2.mul (local.get $t) (local.get $t)))
        (local.set $err
          (f64.add (f64.add (local.get $err) (f64x2.extract_lane 0 (local.get $t))) (f64x2.extract_lane 1 (local.get $t))))
        (local.set $t (f64x2.mul (local.get $q2) (local.get $q2)))
        (local.set $rec
          (f64.add (f64.add (local.get $rec) (f64x2.extract_lane 0 (local.get $t))) (f64x2.extract_lane 1 (local.get $t))))
        (local.set $t (f64x2.mul (local.get $w2) (local.get $q2)))
        (local.set $dot
          (f64.add (f64.add (local.get $dot) (f64x2.extract_lane 0 (local.get $t))) (f64x2.extract_lane 1 (local.get $t))))
        (local.set $t (f64x2.sub (local.get $w2) (local.get $h2)))
        (local.set $halfMaxAbs2 (f64x2.pmax (local.get $halfMaxAbs2) (f64x2.abs (local.get $t))))
        (local.set $t (f64x2.mul (local.get $t) (local.get $t)))
        (local.set $halfErr
          (f64.add (f64.add (local.get $halfErr) (f64x2.extract_lane 0 (local.get $t))) (f64x2.extract_lane 1 (local.get $t))))
        (local.set $t (f64x2.mul (local.get $h2) (local.get $h2)))
        (local.set $halfRec
          (f64.add (f64.add (local.get $halfRec) (f64x2.extract_lane 0 (local.get $t))) (f64x2.extract_lane 1 (local.get $t))))
        (local.set $t (f64x2.mul (local.get $w2) (local.get $h2)))
        (local.set $halfDot
          (f64.add (f64.add (local.get $halfDot) (f64x2.extract_lane 0 (local.get $t))) (f64x2.extract_lane 1 (local.get $t))))
        (local.set $c (i32.add (local.get $c) (i32.const 2)))
        (local.set $c (select (i32.const 0) (local.get $c) (i32.eq (local.get $c) (local.get $channels))))
        (local.set $i (i32.add (local.get $i) (i32.const 2)))
        (br $pairs)))
    (local.set $maxAbs (f64.max (f64x2.extract_lane 0 (local.get $maxAbs2)) (f64x2.extract_lane 1 (local.get $maxAbs2))))
    (local.set $halfMaxAbs
      (f64.max (f64x2.extract_lane 0 (local.get $halfMaxAbs2)) (f64x2.extract_lane 1 (local.get $halfMaxAbs2))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $count)))
        (local.set $x (f64.promote_f32 (f32.load (i32.add (local.get $src) (i32.shl (local.get $i) (i32.const 2))))))
        (local.set $at (i32.add (local.get $grids) (i32.shl (local.get $c) (i32.const 3))))
        (local.set $code
          (i32.trunc_sat_f64_s
            (f64.add
              (f64.mul (local.get $x) (f64.load (local.get $at)))
              (f64.load (i32.add (local.get $at) (local.get $channelBytes))))))
        (local.set $code
          (select (local.get $minCode) (local.get $code) (i32.lt_s (local.get $code) (local.get $minCode))))
        (local.set $code
          (select (local.get $maxCode) (local.get $code) (i32.gt_s (local.get $code) (local.get $maxCode))))
        (if (local.get $wide)
          (then (i32.store16 (i32.add (local.get $codesDst) (i32.shl (local.get $i) (i32.const 1))) (local.get $code)))
          (else (i32.store8 (i32.add (local.get $codesDst) (local.get $i)) (local.get $code))))
        (local.set $dequantized
          (f32.demote_f64
            (f64.add
              (f64.mul (f64.convert_i32_s (local.get $code))
                (f64.load (i32.add (local.get $at) (i32.shl (local.get $channelBytes) (i32.const 1)))))
              (f64.load (i32.add (local.get $at) (i32.mul (local.get $channelBytes) (i32.const 3)))))))
        (f32.store (i32.add (local.get $dequantizedDst) (i32.shl (local.get $i) (i32.const 2))) (local.get $dequantized))
        (local.set $q (f64.promote_f32 (local.get $dequantized)))
        (local.set $half (call $halfOfFloat32Bits (i32.reinterpret_f32 (local.get $dequantized))))
        (i32.store16 (i32.add (local.get $halvesDst) (i32.shl (local.get $i) (i32.const 1))) (local.get $half))
        (local.set $h (f64.promote_f32 (call $halfToFloat (local.get $half))))
        (local.set $sig (f64.add (local.get $sig) (f64.mul (local.get $x) (local.get $x))))
        (local.set $d (f64.sub (local.get $x) (local.get $q)))
        (local.set $err (f64.add (local.get $err) (f64.mul (local.get $d) (local.get $d))))
        (local.set $rec (f64.add (local.get $rec) (f64.mul (local.get $q) (local.get $q))))
        (local.set $dot (f64.add (local.get $dot) (f64.mul (local.get $x) (local.get $q))))
        ;; Compare and select: no NaN reaches this pass (the range pass refuses them), and |d| is never −0.
        (local.set $d (f64.abs (local.get $d)))
        (local.set $maxAbs (select (local.get $d) (local.get $maxAbs) (f64.gt (local.get $d) (local.get $maxAbs))))
        (local.set $d (f64.sub (local.get $x) (local.get $h)))
        (local.set $halfErr (f64.add (local.get $halfErr) (f64.mul (local.get $d) (local.get $d))))
        (local.set $halfRec (f64.add (local.get $halfRec) (f64.mul (local.get $h) (local.get $h))))
        (local.set $halfDot (f64.add (local.get $halfDot) (f64.mul (local.get $x) (local.get $h))))
        (local.set $d (f64.abs (local.get $d)))
        (local.set $halfMaxAbs
          (select (local.get $d) (local.get $halfMaxAbs) (f64.gt (local.get $d) (local.get $halfMaxAbs))))
        (local.set $c (i32.add (local.get $c) (i32.const 1)))
        (local.set $c (select (i32.const 0) (local.get $c) (i32.eq (local.get $c) (local.get $channels))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $sig) (local.get $err) (local.get $rec) (local.get $dot) (local.get $maxAbs)
    (local.get $halfErr) (local.get $halfRec) (local.get $halfDot) (local.get $halfMaxAbs))
)
