"""What AWS Lambda itself defines about runtimes and packages: each fnbench runtime's Lambda runtime
identifier and handler, the direct-upload ZIP limit, CodeSha256, and whether Billed Duration includes
the Init phase.  The one home of these facts: packaging and deploy (orchestrator/subjects), cost
(orchestrator/analysis/cost.py) and the local Lambda (lambda_emulator/) read them here."""

from __future__ import annotations

import base64
import datetime
import hashlib

# Lambda's identifier for each runtime kind and its handler; "provided" ones are custom runtimes
# (bootstrap).  The one home of both: the packages, deploy and the local Lambda read them here.
LAMBDA_RUNTIME = {"rust": "provided.al2023", "go": "provided.al2023", "python": "python3.12",
                  "node": "nodejs20.x", "java": "java21", "java-cds": "java21"}
HANDLER = {"rust": "bootstrap", "go": "bootstrap", "python": "handler.handler", "node": "index.handler",
           "java": "Handler::handleRequest", "java-cds": "Handler::handleRequest"}
MAX_ZIP_BYTES = 50 * 1024 * 1024  # Lambda's limit for a direct ZIP upload
# From 1 Aug 2025 AWS bills the Init phase of on-demand ZIP functions on managed runtimes too (before:
# only custom runtimes and container images).
INIT_BILLED_FOR_MANAGED_FROM = datetime.date(2025, 8, 1)


def code_sha256(zip_bytes: bytes) -> str:
    """Lambda's CodeSha256 of a package: base64 of its SHA-256."""
    return base64.b64encode(hashlib.sha256(zip_bytes).digest()).decode()


def init_billed(runtime: str, on: datetime.date | None = None, *, package_type: str = "Zip") -> bool:
    """Whether Billed Duration includes the Init phase for this Lambda runtime identifier."""
    if runtime.startswith("provided") or package_type == "Image":
        return True
    return (on or datetime.date.today()) >= INIT_BILLED_FOR_MANAGED_FROM
