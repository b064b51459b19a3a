;; The per-tensor affine export's two passes in WebAssembly SIMD (src/quant/kernels/affine.ts drives them):
;; the range [min(0, w), max(0, w)], then the codes round(w / scale) + zeroPoint, clamped, with the report's
;; error sums of ŵ = float32(code · scale + min). The arithmetic is the JS affine module's, step for step in
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
    (local.get $err) (local.get $sig) (local.get $rec) (local.get $dot) (local.get $maxAbs)))
