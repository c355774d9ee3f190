"""The local Lambda's versions, aliases and provisioned concurrency, as AWS's API reference documents them.

* PublishVersion (``POST /2015-03-31/functions/{name}/versions``, 201): a snapshot of $LATEST's code and
  configuration (Memory Size, Timeout, Environment, the code's folder and command) under the next number;
  nothing is published when $LATEST has not changed since the last version (that version is answered);
  409 ResourceConflictException while an update is in progress.  ListVersionsByFunction (GET).
* CreateAlias (POST …/aliases, 201), GetAlias and UpdateAlias (GET/PUT …/aliases/{name}): FunctionVersion
  a published number or $LATEST; RevisionId checked (412) as for functions.
* Put/Get/DeleteProvisionedConcurrencyConfig (``/2019-09-30/functions/{name}/provisioned-concurrency?Qualifier=``,
  202/200/204) on a published version or an alias (never $LATEST, nor an alias on $LATEST: 400
  InvalidParameterValueException, as AWS refuses it).  Put starts ``N`` instances of the version at once,
  each with ``AWS_LAMBDA_INITIALIZATION_TYPE=provisioned-concurrency``; the config is ``IN_PROGRESS``
  until every one has finished its Init (its first ``/invocation/next``), then ``READY``
  (Allocated/Available = the instances initialised).  Provisioned instances are never reaped as idle,
  are served first, and a provisioned instance that dies is replaced; traffic beyond them starts
  on-demand instances of the version (cold: Init Duration, ``on-demand``).  Moving an alias that has a
  config re-provisions it on the new version (IN_PROGRESS again).  Reserved concurrency counts every
  instance of every version, provisioned ones included, and the sum of provisioned concurrency may not
  exceed it.

Invoke with a qualifier (``?Qualifier=`` or ``name:qualifier``) runs that version's configuration in that
version's own instances (``X-Amz-Executed-Version`` its number).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from lambda_emulator.model import ACCOUNT, Function, error, now_iso

# lambda_emulator.server's LocalLambda and Instance: named, not imported (server imports this module).
LocalLambda = Any
Instance = Any

Reply = tuple[int, bytes, list[tuple[str, str]]]
PC_PREFIX = "/2019-09-30/functions/"
_ALIAS_NAME = re.compile(r"^(?!^[0-9]+$)[a-zA-Z0-9_-]{1,128}$")  # botocore's Alias pattern
_QUALIFIER = re.compile(r"^[a-zA-Z0-9$_-]{1,128}$")


@dataclass
class Alias:
    name: str
    version: str
    description: str = ""
    revision: str = field(default_factory=lambda: str(uuid.uuid4()))

    def configuration(self, fn: Function) -> dict[str, Any]:
        return {"AliasArn": f"arn:aws:lambda:{fn.region}:{ACCOUNT}:function:{fn.name}:{self.name}", "Name": self.name,
                "FunctionVersion": self.version, "Description": self.description, "RevisionId": self.revision}


@dataclass
class Provisioned:
    qualifier: str
    requested: int
    target: Function  # the published version its instances run
    instances: list[Any] = field(default_factory=list)
    last_modified: str = field(default_factory=now_iso)
    reason: str = ""

    @property
    def allocated(self) -> int:
        return sum(1 for i in self.instances if i.init_ms is not None and not i.dead)

    @property
    def status(self) -> str:
        if self.reason:
            return "FAILED"
        return "READY" if self.allocated >= self.requested else "IN_PROGRESS"

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"RequestedProvisionedConcurrentExecutions": self.requested,
                               "AvailableProvisionedConcurrentExecutions": self.allocated,
                               "AllocatedProvisionedConcurrentExecutions": self.allocated,
                               "Status": self.status, "LastModified": self.last_modified}
        if self.reason:
            doc["StatusReason"] = self.reason
        return doc


def _ok(status: int, doc: Any) -> Reply:
    return status, orjson.dumps(doc) if doc is not None else b"", [("x-amzn-RequestId", str(uuid.uuid4()))]


def _json(body: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


# -- naming: which function a request means --------------------------------------------------------
def qualifier_of(name: str, query: dict[str, str]) -> tuple[str, str | None]:
    """(the qualifier the request names — "" for none —, a problem): ``name:qualifier`` or an ARN's
    8th field, and ``?Qualifier=``; both given and different is AWS's 400."""
    derived = ""
    if name.startswith("arn:"):
        bits = name.split(":")
        derived = bits[7] if len(bits) > 7 else ""
    elif ":" in name:
        bits = name.split(":")
        if len(bits) >= 3 and bits[1] == "function":  # account:function:name[:qualifier]
            derived = bits[3] if len(bits) > 3 else ""
        elif len(bits) == 2:
            derived = bits[1]
    given = query.get("Qualifier", "")
    if derived and given and derived != given:
        return "", "The derived qualifier from the function name does not match the specified qualifier."
    return derived or given, None


def resolve(fn: Function, qualifier: str) -> Function | None:
    """The Function a qualifier names: $LATEST itself, a published version, or an alias's version."""
    if qualifier in ("", "$LATEST"):
        return fn
    if qualifier in fn.versions:
        return fn.versions[qualifier]
    alias = fn.aliases.get(qualifier)
    if alias is not None:
        return fn if alias.version == "$LATEST" else fn.versions.get(alias.version)
    return None


def every_function(functions: Iterable[Function]) -> Iterator[Function]:
    """Every $LATEST and every published version (each has instances of its own)."""
    for fn in list(functions):
        yield fn
        yield from list(fn.versions.values())


def root(fn: Function) -> Function:
    return fn.base if fn.base is not None else fn


def held(fn: Function) -> int:
    """The instances of every version of ``fn``'s function (what its reserved concurrency counts)."""
    return sum(len(f.instances) for f in every_function([root(fn)]))


# -- instances: provisioned ones first, never reaped, replaced --------------------------------------
def park(fn: Function, inst: Instance) -> None:
    """An instance is free: idle is [on-demand…, provisioned…] and popped from the end, so provisioned
    instances serve first and each group stays warmest-first."""
    if getattr(inst, "provisioned", False):
        fn.idle.append(inst)
    else:
        fn.idle.insert(sum(1 for i in fn.idle if not getattr(i, "provisioned", False)), inst)


def initialised(inst: Instance) -> None:
    """A provisioned instance finished its Init (first /invocation/next) with nothing to run: it waits."""
    if inst.current is None and not inst.dead and inst not in inst.fn.idle:
        park(inst.fn, inst)


def start_provisioned(lam: LocalLambda, config: Provisioned) -> None:
    target = config.target
    while len([i for i in config.instances if not i.dead]) < config.requested:
        inst = lam.make_instance(target)
        inst.provisioned = True
        target.instances.append(inst)
        config.instances.append(inst)
        asyncio.get_running_loop().create_task(inst.start(None))


def retired(lam: LocalLambda, inst: Instance) -> None:
    """A provisioned instance ended (crash, timeout, out of memory): Lambda replaces it."""
    if not getattr(inst, "provisioned", False) or getattr(lam, "closing", False):
        return
    for config in root(inst.fn).provisioned.values():
        if inst in config.instances:
            config.instances.remove(inst)
            if inst.init_ms is None:  # its Init failed: no endless respawning
                config.reason = f"an instance of version {inst.fn.version} failed to initialise"
            elif config.target is inst.fn:
                start_provisioned(lam, config)


def _release(lam: LocalLambda, config: Provisioned) -> None:
    """A config deleted or moved: its instances go back to on-demand duty, retired once idle — here: now
    if idle, after their invocation if busy."""
    instances, config.instances = config.instances, []
    for inst in instances:
        inst.provisioned = False
        if inst.current is None:
            lam._retire(inst)
        else:
            inst.retiring = True


# -- the API ---------------------------------------------------------------------------------------
def drop(lam: LocalLambda, fn: Function) -> None:
    """DeleteFunction: every version's instances go, provisioned ones included."""
    configs = list(fn.provisioned.values())
    fn.provisioned.clear()
    for config in configs:
        _release(lam, config)
    for version in fn.versions.values():
        lam.retire_all(version)


def handles(action: str) -> bool:
    return action == "versions" or action == "aliases" or action.startswith("aliases/")


def api(lam: LocalLambda, fn: Function, method: bytes, action: str, body: bytes) -> Reply:
    """PublishVersion, ListVersionsByFunction, CreateAlias, GetAlias, UpdateAlias (DeleteAlias)."""
    if action == "versions" and method == b"POST":
        return publish(fn, body)
    if action == "versions" and method == b"GET":
        return _ok(200, {"Versions": [fn.configuration(), *(v.configuration() for v in fn.versions.values())]})
    if action == "aliases" and method == b"POST":
        return create_alias(lam, fn, body)
    if action == "aliases" and method == b"GET":
        return _ok(200, {"Aliases": [a.configuration(fn) for a in fn.aliases.values()]})
    name = action.partition("/")[2]
    alias = fn.aliases.get(name)
    if alias is None:
        return error(404, "ResourceNotFoundException", f"Alias not found: {fn.arn}:{name}")
    if method == b"GET":
        return _ok(200, alias.configuration(fn))
    if method == b"PUT":
        return update_alias(lam, fn, alias, body)
    if method == b"DELETE":
        config = fn.provisioned.pop(name, None)
        if config is not None:
            _release(lam, config)
        del fn.aliases[name]
        return _ok(204, None)
    return error(404, "UnknownOperationException", f"{method.decode()} {action}")


def publish(fn: Function, body: bytes) -> Reply:
    doc = _json(body)
    if doc is None:
        return error(400, "InvalidParameterValueException", "the body is not a JSON object")
    if fn.last_update_status == "InProgress":
        return error(409, "ResourceConflictException",
                     f"The operation cannot be performed at this time. An update is in progress for resource: {fn.arn}")
    if doc.get("RevisionId") and doc["RevisionId"] != fn.revision:
        return error(412, "PreconditionFailedException", "The Revision Id provided does not match the latest Revision Id.")
    if doc.get("CodeSha256") and fn.code_sha256 and doc["CodeSha256"] != fn.code_sha256:
        return error(412, "PreconditionFailedException", "CodeSha256 does not match the function's code")
    if fn.versions and fn.published_revision == fn.revision:  # unchanged since the last version
        last = fn.versions[max(fn.versions, key=int)]
        return _ok(201, last.configuration())
    number = str(max((int(v) for v in fn.versions), default=0) + 1)
    version = dataclasses.replace(
        fn, version=number, base=fn, command=list(fn.command), env=dict(fn.env), environment=dict(fn.environment),
        instances=[], idle=[], throttles={}, cold_starts=0, versions={}, aliases={}, provisioned={},
        revision=str(uuid.uuid4()), last_modified=now_iso(), last_update_status="Successful",
        description=str(doc.get("Description") or ""))
    fn.versions[number] = version
    fn.published_revision = fn.revision
    return _ok(201, version.configuration())


def _version_problem(fn: Function, version: Any) -> Reply | None:
    if not isinstance(version, str) or (version != "$LATEST" and version not in fn.versions):
        return error(404, "ResourceNotFoundException", f"Function not found: {fn.arn}:{version}")
    return None


def create_alias(lam: LocalLambda, fn: Function, body: bytes) -> Reply:
    doc = _json(body)
    if doc is None or not isinstance(doc.get("Name"), str) or "FunctionVersion" not in doc:
        return error(400, "InvalidParameterValueException", "CreateAlias needs Name and FunctionVersion")
    name = doc["Name"]
    if not _ALIAS_NAME.match(name):
        return error(400, "ValidationException", f"1 validation error detected: Value '{name}' at 'name' failed to "
                     "satisfy constraint: Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)")
    if name in fn.aliases:
        return error(409, "ResourceConflictException", f"Alias already exists: {fn.arn}:{name}")
    problem = _version_problem(fn, doc["FunctionVersion"])
    if problem is not None:
        return problem
    alias = Alias(name, doc["FunctionVersion"], str(doc.get("Description") or ""))
    fn.aliases[name] = alias
    return _ok(201, alias.configuration(fn))


def update_alias(lam: LocalLambda, fn: Function, alias: Alias, body: bytes) -> Reply:
    doc = _json(body)
    if doc is None:
        return error(400, "InvalidParameterValueException", "the body is not a JSON object")
    if doc.get("RevisionId") and doc["RevisionId"] != alias.revision:
        return error(412, "PreconditionFailedException", "The Revision Id provided does not match the latest Revision Id.")
    if "FunctionVersion" in doc:
        problem = _version_problem(fn, doc["FunctionVersion"])
        if problem is not None:
            return problem
        config = fn.provisioned.get(alias.name)
        if config is not None and doc["FunctionVersion"] == "$LATEST":
            return error(400, "InvalidParameterValueException",
                         "Alias with Provisioned Concurrency cannot point to $LATEST")
        if doc["FunctionVersion"] != alias.version:
            alias.version = doc["FunctionVersion"]
            if config is not None:  # re-provisioned on the new version
                _release(lam, config)
                config.target = fn.versions[alias.version]
                config.last_modified = now_iso()
                start_provisioned(lam, config)
    if "Description" in doc:
        alias.description = str(doc["Description"] or "")
    alias.revision = str(uuid.uuid4())
    return _ok(200, alias.configuration(fn))


def provisioned_api(lam: LocalLambda, fn: Function, method: bytes, query: dict[str, str], body: bytes) -> Reply:
    """Put (202), Get (200) and Delete (204) ProvisionedConcurrencyConfig on ``?Qualifier=``."""
    qualifier = query.get("Qualifier", "")
    if not qualifier or not _QUALIFIER.match(qualifier):
        return error(400, "InvalidParameterValueException", "Qualifier (a version number or alias name) is required")
    if method == b"GET":
        config = fn.provisioned.get(qualifier)
        if config is None:
            return error(404, "ProvisionedConcurrencyConfigNotFoundException",
                         "No Provisioned Concurrency Config found for this function")
        return _ok(200, config.document())
    if method == b"DELETE":
        config = fn.provisioned.pop(qualifier, None)
        if config is None:
            return error(404, "ProvisionedConcurrencyConfigNotFoundException",
                         "No Provisioned Concurrency Config found for this function")
        _release(lam, config)
        return _ok(204, None)
    if method != b"PUT":
        return error(404, "UnknownOperationException", f"{method.decode()} provisioned-concurrency")
    doc = _json(body)
    n = doc.get("ProvisionedConcurrentExecutions") if doc is not None else None
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        return error(400, "InvalidParameterValueException", "ProvisionedConcurrentExecutions must be an integer of 1 or more")
    target = resolve(fn, qualifier)
    if target is None:
        return error(404, "ResourceNotFoundException", f"Function not found: {fn.arn}:{qualifier}")
    if target is fn:  # $LATEST, or an alias on it
        return error(400, "InvalidParameterValueException",
                     "Provisioned Concurrency Configs cannot be applied to unpublished function versions.")
    others = sum(c.requested for q, c in fn.provisioned.items() if q != qualifier)
    if fn.reserved is None:  # unreserved: what the account's unreserved pool can give, less its minimum
        cap = lam.limits.unreserved(lam.functions.values()) - lam.limits.unreserved_min
        if others + n > cap:
            return error(400, "InvalidParameterValueException",
                         f"Requested Provisioned Concurrency ({others + n} for the function) should not be greater "
                         f"than the account's unreserved concurrency less its minimum ({cap}).")
    elif others + n > fn.reserved:
        return error(400, "InvalidParameterValueException",
                     f"Requested Provisioned Concurrency ({others + n} for the function) should not be greater than "
                     f"the reserved concurrency for the function ({fn.reserved}).")
    config = fn.provisioned.get(qualifier)
    if config is not None and config.target is target:  # the same version: keep what is allocated
        config.requested, config.last_modified, config.reason = n, now_iso(), ""
        extra = [i for i in config.instances if not i.dead][n:]
        if extra:
            config.instances = [i for i in config.instances if i not in extra]
            _release(lam, Provisioned(qualifier, len(extra), target, extra))
    elif config is not None:
        _release(lam, config)
        config.requested, config.target, config.last_modified, config.reason = n, target, now_iso(), ""
    else:
        config = fn.provisioned[qualifier] = Provisioned(qualifier, n, target)
    start_provisioned(lam, config)
    return _ok(202, config.document())
