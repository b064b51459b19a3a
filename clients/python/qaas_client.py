#!/usr/bin/env python3
"""A client of the qaas HTTP API in one file, Python's standard library only (3.8+), for pipelines.

    from qaas_client import Client
    client = Client("http://127.0.0.1:8080", api_key=None)
    model = client.upload_model("my_model/")                  # a model directory, or one .zip / .tar.gz
    data = client.upload_dataset("x.npy", "y.npy")            # or one .npz / .json, or nested lists
    job = client.submit({"modelId": model["id"], "method": {"name": "affine", "bits": 8},
                         "data": {"evaluation": data["id"]}})
    job = client.wait(job["id"], on_event=lambda event, data: print(event, data))
    report = client.report(job["id"])
    client.download(job["id"], "quantized/")                 # model/ (stock TF.js), packed/, report.json

From a shell, like `qaas submit` (exit 0 when the job succeeded, 1 when it failed or was cancelled, 2 on bad
input):

    python3 qaas_client.py quantize MODEL_DIR --spec spec.json --out quantized/ [--api URL] [--api-key KEY]

A 4xx/5xx answer raises ApiError carrying the service's problem+json. A 429 or 503 (the service did nothing) is
sent again after its Retry-After; a submission is sent under an Idempotency-Key, so resending it after a
network error never makes a second job.
"""

import argparse
import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

__all__ = ["ApiError", "Client", "TERMINAL_STATUSES", "main"]

TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")
_BUSY_RETRIES = 6
_NETWORK_RETRIES = 3
_CHUNK = 1 << 16


class ApiError(Exception):
    """The service answered 4xx/5xx; `problem` is its problem+json (type, title, detail, requestId...)."""

    def __init__(self, status, problem):
        self.status = status
        self.problem = problem
        detail = problem.get("detail")
        super().__init__("%d %s%s" % (status, problem.get("title", "error"), ": " + detail if detail else ""))


class _Part:
    """One multipart/form-data part: a file streamed from disk, bytes held in memory, or (no filename) a text field."""

    def __init__(self, field, filename, path=None, data=None):
        self.field, self.filename, self.path, self.data = field, filename, path, data

    def head(self, boundary):
        if self.filename is None:
            return ('--%s\r\nContent-Disposition: form-data; name="%s"\r\n\r\n' % (boundary, self.field)).encode()
        return (
            '--%s\r\nContent-Disposition: form-data; name="%s"; filename="%s"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n" % (boundary, self.field, self.filename.replace('"', "%22"))
        ).encode()

    def size(self):
        return os.path.getsize(self.path) if self.path is not None else len(self.data)

    def chunks(self):
        if self.path is None:
            yield self.data
            return
        with open(self.path, "rb") as f:
            while True:
                chunk = f.read(_CHUNK)
                if not chunk:
                    return
                yield chunk


def _multipart(parts):
    """(body iterable, content type, length): the files are read as the request is sent, not held in memory."""
    boundary = "qaas-" + uuid.uuid4().hex
    heads = [p.head(boundary) for p in parts]
    tail = ("--%s--\r\n" % boundary).encode()
    length = sum(len(h) + p.size() + 2 for h, p in zip(heads, parts)) + len(tail)

    def body():
        for head, part in zip(heads, parts):
            yield head
            for chunk in part.chunks():
                yield chunk
            yield b"\r\n"
        yield tail

    return body, "multipart/form-data; boundary=" + boundary, length


def _metadata_parts(name, labels):
    """The upload's text fields `name` and `labels` (JSON), when given."""
    parts = [] if name is None else [_Part("name", None, data=name.encode())]
    return parts + ([] if labels is None else [_Part("labels", None, data=json.dumps(labels).encode())])


class Client:
    """The qaas API at `base_url` (e.g. http://127.0.0.1:8080), with a bearer `api_key` when it has keys."""

    def __init__(self, base_url, api_key=None, timeout=60.0):
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    # -- uploads ---------------------------------------------------------------------------------------------

    def upload_model(self, path, name=None, labels=None):
        """A model directory (model.json and the shards its manifest names) or one .zip / .tar.gz holding them.

        `name` and `labels` (a dict of str) name and label it. Files the tenant already has as a model give
        back that model, unchanged (the service answers 200 instead of 201).
        """
        if os.path.isdir(path):
            with open(os.path.join(path, "model.json"), encoding="utf-8") as f:
                manifest = json.load(f).get("weightsManifest") or []
            names = ["model.json"] + [shard for group in manifest for shard in group.get("paths", [])]
            parts = [_Part("file", name, path=os.path.join(path, name)) for name in names]
        else:
            parts = [_Part("file", os.path.basename(path), path=path)]
        return self._upload("/v1/models", parts + _metadata_parts(name, labels))

    def upload_dataset(self, x, y=None, name=None, labels=None):
        """x (and y): paths to .npy files, one .npz or .json path as x alone, or nested lists of numbers.

        `name` and `labels` as for upload_model; the same arrays again give back the stored dataset.
        """
        if isinstance(x, (list, tuple)):
            payload = {"x": x} if y is None else {"x": x, "y": y}
            parts = [_Part("file", "data.json", data=json.dumps(payload).encode())]
        elif y is not None:
            parts = [_Part("x", os.path.basename(x), path=x), _Part("y", os.path.basename(y), path=y)]
        else:
            # A lone .npy is x whatever its name; .npz and .json are told apart by the service from their ending.
            field = "x" if x.lower().endswith(".npy") else "file"
            parts = [_Part(field, os.path.basename(x), path=x)]
        return self._upload("/v1/datasets", parts + _metadata_parts(name, labels))

    def models(self, name=None, labels=None, limit=100):
        """The tenant's models, newest first, with that name and every one of those labels (all pages)."""
        return self._list("/v1/models", name, labels, limit)

    def datasets(self, name=None, labels=None, limit=100):
        return self._list("/v1/datasets", name, labels, limit)

    def jobs(self, name=None, labels=None, status=None, limit=100):
        return self._list("/v1/jobs", name, labels, limit, [("status", status)] if status else [])

    def _list(self, path, name, labels, limit, extra=()):
        query = [("limit", str(limit))] + list(extra)
        if name is not None:
            query.append(("name", name))
        query += [("label", "%s=%s" % (k, v)) for k, v in sorted((labels or {}).items())]
        items, cursor = [], None
        while True:
            paging = [("cursor", cursor)] if cursor else []
            page = self._json("GET", path + "?" + urllib.parse.urlencode(query + paging))
            items += page["items"]
            cursor = page["nextCursor"]
            if cursor is None:
                return items

    def _upload(self, path, parts):
        body, content_type, length = _multipart(parts)
        return self._json("POST", path, body=body, headers={"Content-Type": content_type}, length=length)

    # -- jobs ------------------------------------------------------------------------------------------------

    def submit(self, spec, idempotency_key=None):
        """Queues the job spec (202: the job record). Resent on a network error under the same Idempotency-Key."""
        key = idempotency_key or str(uuid.uuid4())
        data = json.dumps(spec).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": key}
        for attempt in range(1, _NETWORK_RETRIES + 1):
            try:
                return self._json("POST", "/v1/jobs", body=lambda: iter([data]), headers=headers, length=len(data))
            except (urllib.error.URLError, ConnectionError):
                if attempt == _NETWORK_RETRIES:
                    raise
                time.sleep(0.25 * attempt)

    def job(self, job_id):
        return self._json("GET", "/v1/jobs/" + urllib.parse.quote(job_id))

    def report(self, job_id):
        """report.json of a finished job, as a dict."""
        return self._json("GET", "/v1/jobs/%s/report" % urllib.parse.quote(job_id))

    def cancel(self, job_id):
        return self._json("POST", "/v1/jobs/%s/cancel" % urllib.parse.quote(job_id))

    def wait(self, job_id, on_event=None, poll_seconds=1.0):
        """
        Follows the job to its end and returns its final record. Reads the Server-Sent Events (`state`, `stage`,
        `progress`, `log`, `final`), handing each to on_event(event, data); where the stream is not available
        (a proxy that buffers or refuses it) or breaks, it polls GET /v1/jobs/{id} instead, reporting each change
        as a `progress` event.
        """
        use_events = True
        while True:
            if use_events:
                try:
                    final = self._follow_events(job_id, on_event)
                    if final is not None:
                        return final
                except ApiError as error:
                    if error.status < 500 and error.status not in (404, 405, 406):
                        raise
                    use_events = False
                except (OSError, ValueError):
                    use_events = False
            job = self.job(job_id)
            if job["status"] in TERMINAL_STATUSES:
                if on_event:
                    on_event("final", job)
                return job
            if not use_events:
                if on_event:
                    on_event("progress", {"stage": job["stage"], "progress": job["progress"]})
                time.sleep(poll_seconds)

    def _follow_events(self, job_id, on_event):
        """The `final` event's job, or None when the stream ended without one."""
        response = self._open(
            "GET", "/v1/jobs/%s/events" % urllib.parse.quote(job_id), headers={"Accept": "text/event-stream"}
        )
        with response:
            if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
                raise ValueError("the events URL did not answer with an event stream")
            event, data = None, []
            for raw in response:
                line = raw.decode("utf-8").rstrip("\r\n")
                if line == "":
                    if event is not None and data:
                        payload = json.loads("\n".join(data))
                        if on_event:
                            on_event(event, payload)
                        if event == "final":
                            return payload
                    event, data = None, []
                elif line.startswith(":"):
                    continue
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].lstrip(" "))
        return None

    def download(self, job_id, out_dir):
        """Writes every artifact of a succeeded job under out_dir (model/, packed/, report.json); returns the paths."""
        job = self.job(job_id)
        if job["status"] != "succeeded":
            raise ValueError("job %s is %s: only a succeeded job has artifacts" % (job_id, job["status"]))
        written = []
        for path in job["artifacts"]:
            target = os.path.join(out_dir, *path.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            quoted = "/".join(urllib.parse.quote(segment) for segment in path.split("/"))
            # Written beside the target and renamed over it: a download that dies leaves no half file.
            fd, temp = tempfile.mkstemp(dir=os.path.dirname(target), prefix=".qaas-")
            try:
                with os.fdopen(fd, "wb") as f, self._open("GET", "/v1/jobs/%s/artifacts/%s" % (job_id, quoted)) as r:
                    while True:
                        chunk = r.read(_CHUNK)
                        if not chunk:
                            break
                        f.write(chunk)
                os.replace(temp, target)
            except BaseException:
                os.unlink(temp)
                raise
            written.append(target)
        return written

    # -- HTTP ------------------------------------------------------------------------------------------------

    def _json(self, method, path, body=None, headers=None, length=None):
        with self._open(method, path, body=body, headers=headers, length=length) as response:
            return json.loads(response.read().decode("utf-8"))

    def _open(self, method, path, body=None, headers=None, length=None):
        """One request (body: a function returning the bytes to send, so a retry can send them again)."""
        all_headers = dict(headers or {})
        if self.api_key:
            all_headers["Authorization"] = "Bearer " + self.api_key
        if length is not None:
            all_headers["Content-Length"] = str(length)
        for attempt in range(1, _BUSY_RETRIES + 1):
            request = urllib.request.Request(
                self.base_url + path, data=body() if body else None, headers=all_headers, method=method
            )
            try:
                return urllib.request.urlopen(request, timeout=self.timeout)
            except urllib.error.HTTPError as error:
                text = error.read().decode("utf-8", "replace")
                retry_after = error.headers.get("Retry-After")
                error.close()
                if error.code in (429, 503) and attempt < _BUSY_RETRIES:
                    try:
                        seconds = float(retry_after)
                    except (TypeError, ValueError):
                        seconds = 1.0
                    time.sleep(min(max(seconds, 0.1), 30.0))
                    continue
                try:
                    problem = json.loads(text)
                except ValueError:
                    problem = {"title": error.reason, "detail": text[:200]}
                raise ApiError(error.code, problem) from None


# -- command line --------------------------------------------------------------------------------------------


def _is_id(prefix, ref):
    return isinstance(ref, str) and ref.startswith(prefix) and not os.path.exists(ref)


def _summary(report):
    model = report["model"]
    lines = [
        "%d tensors quantized, %d skipped; packed %d B (%.2fx, %.2f bits/weight); backend %s"
        % (
            len(report["tensors"]),
            len(report["skipped"]),
            model["packedBytes"],
            model["compressionRatio"],
            model["bitsPerWeight"],
            model["backend"],
        )
    ]
    for stage, metrics in model.get("metrics", {}).items():
        values = ", ".join(
            "%s %s" % (name, "%.4f" % value if isinstance(value, float) else value) for name, value in metrics.items()
        )
        lines.append("%s: %s" % (stage, values))
    diagnosis = report.get("diagnosis")
    if diagnosis and not diagnosis["worst"]:
        lines.append("diagnosis: every layer's own SQNR is at least %g dB" % diagnosis["healthyDb"])
    elif diagnosis:
        layers = {layer["name"]: layer for layer in diagnosis["layers"]}
        for name in diagnosis["worst"][:3]:
            layer = layers[name]
            own = layer["localSqnrDb"]
            lines.append(
                "worst layer %d: %s (%s), own SQNR weights %s, activations %s -> %s: %s"
                % (
                    layer["rank"],
                    name,
                    layer["op"],
                    _db(own.get("weights")),
                    _db(own.get("activations")),
                    layer["suggestion"],
                    layer["reason"],
                )
            )
    return "\n".join(lines)


def _db(value):
    # 144.5 dB is the report's "exact" (float32 rounding).
    if value is None:
        return "-"
    return "exact" if value >= 144.49 else "%.1f dB" % value


def quantize(args, say):
    """The `quantize` command: returns the exit code."""
    try:
        with open(args.spec, encoding="utf-8") as f:
            spec = json.load(f)
    except (OSError, ValueError) as error:
        raise _BadInput("cannot read the spec %s: %s" % (args.spec, error))
    if not isinstance(spec, dict):
        raise _BadInput("the spec %s is not a JSON object" % args.spec)
    client = Client(args.api, args.api_key)

    model_id = args.model if _is_id("mdl_", args.model) else client.upload_model(args.model)["id"]
    say("model %s" % model_id)
    data = dict(spec.get("data") or {})
    uploaded = {}
    for role, ref in sorted(data.items()):
        if not isinstance(ref, str) or _is_id("ds_", ref):
            continue
        if ref not in uploaded:
            paths = ref.split(",")
            if len(paths) > 2:
                raise _BadInput("data.%s: a dataset is x.npy[,y.npy], one .npz or one .json; got %s" % (role, ref))
            uploaded[ref] = client.upload_dataset(*paths)["id"]
        data[role] = uploaded[ref]
        say("data.%s %s" % (role, data[role]))
    spec = dict(spec, modelId=model_id, **({"data": data} if data else {}))

    job = client.submit(spec)
    say("job %s %s" % (job["id"], job["status"]))

    def on_event(event, payload):
        if event == "progress":
            say("[%5.1f%%] %s" % (payload.get("progress", 0), payload.get("stage", "")))
        elif event == "log":
            say("        %s" % payload.get("message", ""))

    job = client.wait(job["id"], on_event=on_event)
    if job["status"] != "succeeded":
        error = job.get("error") or {}
        sys.stderr.write("qaas: job %s %s%s\n" % (job["id"], job["status"], ": " + error["message"] if error else ""))
        return 1
    client.download(job["id"], args.out)
    say("wrote %s/{model,packed,report.json}" % os.path.abspath(args.out))
    print(_summary(client.report(job["id"])))
    return 0


class _BadInput(Exception):
    pass


def main(argv=None):
    parser = argparse.ArgumentParser(prog="qaas_client.py", description="A client of the qaas HTTP API.")
    commands = parser.add_subparsers(dest="command", required=True)
    q = commands.add_parser(
        "quantize",
        help="upload a model (and the spec's local datasets), run the job, download its artifacts",
        description="Exit 0 when the job succeeded, 1 when it failed or was cancelled, 2 on bad input.",
    )
    q.add_argument("model", metavar="MODEL_DIR", help="a model directory, a .zip / .tar.gz, or an mdl_ id")
    q.add_argument("--spec", required=True, metavar="FILE", help="job spec JSON; data refs may be local files")
    q.add_argument("--out", required=True, metavar="DIR", help="where model/, packed/ and report.json go")
    q.add_argument("--api", default=os.environ.get("QAAS_API_URL", "http://127.0.0.1:8080"), metavar="URL")
    q.add_argument("--api-key", default=os.environ.get("QAAS_API_KEY"), metavar="KEY")
    q.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args(argv)

    def say(line):
        if not args.quiet:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    try:
        return quantize(args, say)
    except _BadInput as error:
        sys.stderr.write("qaas: %s\n" % error)
        return 2
    except ApiError as error:
        sys.stderr.write("qaas: %s\n" % error)
        return 2 if error.status < 500 else 1
    except FileNotFoundError as error:
        sys.stderr.write("qaas: not found: %s\n" % error.filename)
        return 2
    except (urllib.error.URLError, OSError) as error:
        sys.stderr.write("qaas: cannot reach the service at %s: %s\n" % (args.api, getattr(error, "reason", error)))
        return 1


if __name__ == "__main__":
    sys.exit(main())
