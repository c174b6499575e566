"""No phoning home: switch off the runtimes' telemetry before they are imported.

stackscore is an offline batch tool for private corpora; nothing it runs may send anything
anywhere or write usage records into the user's home directory. Two runtimes would:

- OpenVINO: ``import openvino`` imports ``openvino.tools.ovc``, which starts
  ``openvino_telemetry`` (Google Analytics, ``www.google-analytics.com``) and writes
  ``~/intel/openvino_ga_cid`` and ``~/intel/stats`` unless a consent file says no; NNCF does the
  same at import. Both fall back to their own no-op stubs when ``openvino_telemetry`` cannot be
  imported (``openvino.tools.ovc.telemetry_stub``, ``NNCFTelemetryStub``), so the supported
  way to opt out without writing a consent file into ``~/intel`` is to make that import fail:
  ``sys.modules["openvino_telemetry"] = None``. (Its other switches are a consent file in the
  home directory, or the ``CI`` variable, which changes other tools' behaviour too.)
- ONNX Runtime 1.32 on Linux: a 1DS telemetry client that writes a device id and an event
  database under ``~/.cache/Microsoft/DeveloperTools/.onnxruntime``; ``ORT_DISABLE_TELEMETRY=1``
  switches it off when set before the runtime starts.

``disable_telemetry()`` runs when ``stackscore`` is imported, so before any of our code imports
a runtime, in this process and in Ray/Spark workers, which import stackscore to unpickle an
Ensemble. A runtime that the host program imported *before* stackscore is out of our reach.
"""

from __future__ import annotations

import os
import sys


def disable_telemetry() -> None:
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # read by onnxruntime's C++ core via getenv
    if "openvino_telemetry" not in sys.modules:
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]  # import -> ImportError
