"""Purpose-built TorchServe test models: tiny function handlers (no weights, no torch) written
as files and archived with ``torch-model-archiver`` into a model store.

Every handler reads each request's ``data`` input as JSON and answers JSON. TorchServe calls
``handle(None, context)`` once when a worker loads the model, so each returns None then.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_PREAMBLE = '''
import json


def _doc(row):
    body = row.get("data") if row.get("data") is not None else row.get("body")
    if isinstance(body, (bytes, bytearray)):
        return json.loads(body) if body else {}
    return body if isinstance(body, dict) else {}


def _version(context):
    return (context.manifest or {}).get("model", {}).get("modelVersion", "")
'''

HANDLERS = {
    # The input with the model's name and version added.
    "echo": _PREAMBLE + '''

def handle(data, context):
    if data is None:
        return None
    return [json.dumps({**_doc(row), "model": context.model_name, "version": _version(context)})
            for row in data]
''',
    # Raises: ValueError("bad input: <detail>") (TorchServe hides its message), or, when asked,
    # TorchServe's PredictionException(message, code) (whose message and code it passes on);
    # with "die_once": <path>, the worker process exits unless that file exists (it creates it).
    "error": _PREAMBLE + '''
import os


def handle(data, context):
    if data is None:
        return None
    doc = _doc(data[0])
    marker = doc.get("die_once")
    if marker and not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    if marker:
        return [json.dumps({"survived": True}) for _ in data]
    message = "bad input: " + str(doc.get("detail", ""))
    if "code" in doc:
        from ts.utils.util import PredictionException
        raise PredictionException(message, int(doc["code"]))
    raise ValueError(message)
''',
    # Sleeps "sleep_ms" milliseconds, then echoes.
    "slow": _PREAMBLE + '''
import time


def handle(data, context):
    if data is None:
        return None
    docs = [_doc(row) for row in data]
    time.sleep(max(float(doc.get("sleep_ms", 0)) for doc in docs) / 1000.0)
    return [json.dumps({**doc, "slept": True}) for doc in docs]
''',
    # Streams "chunks" responses: all but the last as intermediate responses, the last as the
    # handler's return value (TorchServe then sets ts_stream_next=false and ends the stream).
    "stream": _PREAMBLE + '''
from ts.protocol.otf_message_handler import send_intermediate_predict_response


def handle(data, context):
    if data is None:
        return None
    count = int(_doc(data[0]).get("chunks", 3))
    for i in range(count - 1):
        send_intermediate_predict_response([json.dumps({"chunk": i})], context.request_ids,
                                           "Intermediate Prediction success", 200, context)
    return [json.dumps({"chunk": count - 1, "last": True})]
''',
    # One output per request of the batch, each saying how large the batch was.
    "batch": _PREAMBLE + '''

def handle(data, context):
    if data is None:
        return None
    return [json.dumps({"batch_size": len(data), "index": i, "input": _doc(row)})
            for i, row in enumerate(data)]
''',
    # Echoes, but its handler raises on 30% of inputs: those whose "n" ends in 0, 1 or 2.
    "flaky": _PREAMBLE + '''

def handle(data, context):
    if data is None:
        return None
    docs = [_doc(row) for row in data]
    if any(int(doc.get("n", 0)) % 10 < 3 for doc in docs):
        raise ValueError("flaky model: this input fails")
    return [json.dumps({**doc, "model": context.model_name}) for doc in docs]
''',
    # Fails when a worker loads it: its workers never start.
    "broken": """
def handle(data, context):
    raise RuntimeError("this model cannot load")
""",
}


def archive(kind: str, model_name: str, version: str, work_dir: Path, export_dir: Path) -> Path:
    """``<export_dir>/<model_name>-<version>.mar`` holding handler ``kind``."""
    source_dir = work_dir / f"{model_name}-{version}"
    source_dir.mkdir(parents=True, exist_ok=True)
    handler = source_dir / f"{kind}_handler.py"
    handler.write_text(HANDLERS[kind])
    archive_name = f"{model_name}-{version}"
    archiver = Path(sys.executable).parent / "torch-model-archiver"
    subprocess.run([str(archiver), "--model-name", archive_name, "--version", version,
                    "--handler", str(handler), "--export-path", str(export_dir), "--force"],
                   check=True, capture_output=True, timeout=120)
    return export_dir / f"{archive_name}.mar"
