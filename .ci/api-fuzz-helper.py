#!/usr/bin/env python3
"""The Python side of .ci/api-fuzz (run with the virtualenv's Python):

    api-fuzz-helper.py config BASE_URL OUT_TOML
        writes schemathesis' configuration for the node at BASE_URL: which refusals of valid data
        are acceptable (everywhere, and a 400 on the few operations with rules JSON Schema cannot
        state: INEXPRESSIBLE), no cache across runs, and dictionaries of the ids that exist on
        the node (read from its lists), drawn for id parameters half of the time so that reads
        find objects, not only 404s.

    api-fuzz-helper.py audit REPORT_DIR
        checks that every 400 a schema-valid request got on those operations was for one of
        their INEXPRESSIBLE rules: prints how many each rule explains and any 400 none does, and
        exits 1 if there is one (`report` lists those among the failures).

    api-fuzz-helper.py report REPORT_DIR [--base URL] [--markdown FILE]
        condenses schemathesis' NDJSON reports (`--report ndjson`) into distinct failures: an
        operation, the check that failed, the gist of its message (the status received) and the
        server's reason (the field an INVALID_ARGUMENT names, else its code), with the 400s the
        audit finds unexplained. Prints them by check; --markdown also writes each with the
        shortest reproducing curl command (against --base, default $JCS) and the response it got.
"""

import argparse
import base64
import json
import pathlib
import re
import shlex
import sys

# Headers every schemathesis request carries; not part of a reproduction.
NOISE_HEADERS = {"user-agent", "accept", "accept-encoding", "connection", "content-length"}


def decode(blob):
    if blob is None:
        return b""
    if isinstance(blob, dict) and "$base64" in blob:
        return base64.b64decode(blob["$base64"])
    if isinstance(blob, str):
        return blob.encode()
    return json.dumps(blob).encode()


def gist(failure, status):
    """What tells this failure from others of its check on the same operation."""
    message = (failure.get("message") or "").strip()
    received = re.match(r"Received: (\d+)", message)
    if received:
        return f"got {received.group(1)}"
    if failure.get("code") in ("ST201", "ST202"):  # data accepted or rejected: by which status
        return f"got {status}"
    return message.splitlines()[0][:120] if message else f"got {status}"


def error_body(interaction):
    """The response's error envelope: (code, errorMsg), or None if it has none."""
    response = (interaction or {}).get("response") or {}
    try:
        body = json.loads(decode(response.get("content")))
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    return str(body.get("code", "")), str(body.get("errorMsg", ""))


def reason(interaction):
    """The server's reason, as a class: the field an INVALID_ARGUMENT names, else its code."""
    body = error_body(interaction)
    if body is None:
        return ""
    code, message = body
    field = re.match(r"([A-Za-z_][\w.\[\]]*): ", message)
    if not field:
        return code
    return code + " " + re.sub(r"\[\d+\]", "[]", field.group(1))  # tasks[3].name: tasks[].name


def pack(items, width=100, indent="    "):
    """`items` joined by ', ' into lines of at most `width`, never breaking an item."""
    lines, line = [], ""
    for item in items:
        candidate = f"{line}, {item}" if line else item
        if line and len(indent) + len(candidate) > width:
            lines.append(indent + line + ",")
            candidate = item
        line = candidate
    return "\n".join(lines + [indent + line])


def curl(request, base):
    path = re.sub(r"^https?://[^/]+", "", request["uri"])
    # "$JCS" stays a variable for the shell; any other base is quoted with the path
    uri = f'"{base}"{shlex.quote(path)}' if base.startswith("$") else shlex.quote(base + path)
    parts = ["curl", "-sS", "-X", request["method"]]
    for name, values in (request.get("headers") or {}).items():
        if name.lower() in NOISE_HEADERS or name.lower().startswith("x-schemathesis"):
            continue
        for value in values if isinstance(values, list) else [values]:
            parts += ["-H", f"{name}: {value}"]
    body = decode(request.get("body"))
    if body:
        try:
            parts += ["--data-binary", body.decode()]
        except UnicodeDecodeError:
            parts = ["printf", "%b", repr(body)[2:-1], "|"] + parts + ["--data-binary", "@-"]
    return " ".join(p if p == "|" else shlex.quote(p) for p in parts) + " " + uri


UNEXPLAINED = "Schema-valid request rejected, for no inexpressible rule"


def explain(operation, interaction):
    """For a 400 on an operation with INEXPRESSIBLE rules: the rule it names, else None."""
    body = error_body(interaction)
    if body is None or body[0] != "INVALID_ARGUMENT":
        return None
    for why, pattern in INEXPRESSIBLE.get(operation, ()):
        if re.match(pattern, body[1], re.DOTALL):
            return why
    return None


def load(report_dir):
    """(findings, errors, explained): failed checks and the 400s the audit finds unexplained,
    requests that got no response, and how many 400s each INEXPRESSIBLE rule explained."""
    findings, errors, explained = {}, {}, {}

    def add(key, title, failure, interaction, case):
        entry = findings.setdefault(key, {"cases": 0, "title": title, "examples": []})
        entry["cases"] += 1
        if interaction:
            entry["examples"].append((failure, interaction, case))

    for path in sorted(pathlib.Path(report_dir).rglob("*.ndjson")):
        for line in path.open():
            event = json.loads(line)
            error = event.get("NonFatalError")
            if error:  # the request could not be made or got no answer (a timeout, say)
                value = error.get("value") or {}
                message = re.sub(r"'[^']*'", "'…'", (value.get("message") or "").splitlines()[0])[:160]
                key = (error.get("label") or "?", value.get("type", "?"), message)
                errors[key] = errors.get(key, 0) + 1
                continue
            finished = event.get("ScenarioFinished")
            if not finished:
                continue
            recorder = finished["recorder"]
            for case_id, checks in recorder.get("checks", {}).items():
                interaction = recorder.get("interactions", {}).get(case_id)
                case = (recorder.get("cases", {}).get(case_id) or {}).get("value", {})
                for check in checks:
                    if check.get("status") == "success":
                        continue
                    failure = (check.get("failure_info") or {}).get("failure") or {}
                    operation = failure.get("operation") or recorder.get("label")
                    status = ((interaction or {}).get("response") or {}).get("status_code")
                    what = gist(failure, status)
                    key = (operation, failure.get("code", ""), check["name"], what, reason(interaction))
                    add(key, failure.get("title", check["name"]), failure, interaction, case)
            # The audit: positive_data_acceptance took a 400 for valid data on the operations in
            # INEXPRESSIBLE; each must be for one of that operation's rules.
            for case_id, stored in (recorder.get("cases") or {}).items():
                case = (stored or {}).get("value") or {}
                operation = f"{case.get('method', '')} {case.get('path', '')}"
                mode = ((case.get("meta") or {}).get("generation") or {}).get("mode")
                interaction = (recorder.get("interactions") or {}).get(case_id)
                status = ((interaction or {}).get("response") or {}).get("status_code")
                if operation not in INEXPRESSIBLE or mode != "positive" or status != 400:
                    continue
                why = explain(operation, interaction)
                if why is not None:
                    explained[(operation, why)] = explained.get((operation, why), 0) + 1
                    continue
                failure = {
                    "message": "Valid data was refused with 400, for none of this operation's rules "
                    "that JSON Schema cannot state (api-fuzz-helper.py INEXPRESSIBLE)"
                }
                key = (operation, "ST202", "api-fuzz-helper.py audit", "got 400", reason(interaction))
                add(key, UNEXPLAINED, failure, interaction, case)
    return findings, errors, explained


# positive_data_acceptance fails a schema-valid request that is refused; refusals a schema cannot
# foresee are allowed: schemathesis' defaults (404 a missing object, 409 a conflict with state)
# and 422 UNKNOWN_REFERENCE (docs/ERRORS.md: the body names an object that does not exist).
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

# Operations that refuse some schema-valid requests with 400 INVALID_ARGUMENT for a rule JSON
# Schema cannot state (it relates two fields, two list items, a path to a body, a value to stored
# state): operation -> [(the rule, a regex its errorMsg starts with)]. For these operations only,
# positive_data_acceptance also accepts a 400 (each one's [[operations]] entry in the written
# configuration, with the rules as comments); every other check stays on for them. A 400 here is
# then accepted only for one of the operation's own rules: `audit` reads every 400 a schema-valid
# request got on these operations and fails the run on any other reason (e.g. a parameter the
# document calls optional and the server requires).
JOB_RULES = [  # jcs_api::model::job, ::schedule: CreateTrainJob::validate
    (
        "task names are unique within a job (uniqueItems compares whole tasks, not one field)",
        r"tasks\[\d+\]\.name: '.*' is used by another task",
    ),
    (
        "a task's centerIDs has 0, 1 or exactly replicaNumber items (a length equal to another field)",
        r"tasks\[\d+\]\.centerIDs: has \d+ centers; give one for all replicas or one per replica",
    ),
    ("policy manual needs centerIDs on every task", r"tasks\[\d+\]\.centerIDs: is required by policy manual"),
    ("policy qos needs qos", r"qos: is required by policy qos"),
    (
        "the replicas of all tasks together are at most the node's max_job_replicas (a sum, and config)",
        r"tasks\[\]\.replicaNumber: ask for \d+ replicas in all, at most \d+ per job allowed",
    ),
]
PATH_ID = ("the path's id is the body's id (a path parameter against a body field)", r"id: path names '")


def twice(field):  # jcs_api::validate::id_list
    return (f"{field} names no id twice (a comma-separated string)", re.escape(field) + r": lists '.*' twice")


INEXPRESSIBLE = {
    "POST /openapi/v1/trainjob": JOB_RULES,
    "POST /openapi/v1/trainjob/plan": JOB_RULES,
    "PUT /openapi/v1/centers/{id}": [PATH_ID],
    "PUT /openapi/v1/datasets/{id}": [PATH_ID],
    "POST /openapi/v1/images": [twice("resource_spec")],
    "PUT /openapi/v1/images/{id}": [PATH_ID, twice("resource_spec")],
    "POST /openapi/v1/resourcespecs": [twice("computing_center_list")],
    "PUT /openapi/v1/resourcespecs/{id}": [PATH_ID, twice("computing_center_list")],
    "GET /scheduler/algorithm/{algorithmId}/score/{centerId}": [  # A.5, node/src/http/scheduler.rs
        ("not both jobId and resourceSpecId (two query parameters)", r"jobId: give jobId or resourceSpecId"),
        ("the center offers the spec (stored state)", r"centerId: center '.*' does not offer spec "),
    ],
    "GET /scheduler/evaluate/score/{centerId}": [  # A.6, jcs_raft::schedule::evaluate
        (
            "as many algorithmScores as algorithmIds (two query parameters)",
            r"algorithmScores: algorithmIds has \d+ entries but algorithmScores has \d+",
        ),
        ("algorithmIds names no id twice (a comma-separated string)", r"algorithmIds: algorithmId '.*' is"),
    ],
    "DELETE /admin/cluster/members/{nodeId}": [  # node/src/cluster/membership.rs (stored state)
        ("the cluster's last voter is not removed", r"node \d+ is the last voter; a cluster needs one"),
    ],
}

# (dictionary, list path, how an item names itself) and which parameters draw from it.
LISTS = {
    "center-ids": ("/openapi/v1/centers", lambda i: i["ai_center_id"]),
    "spec-ids": ("/openapi/v1/resourcespecs", lambda i: i["resource_spec_id"]),
    "image-ids": ("/openapi/v1/images", lambda i: i["image_id"]),
    "dataset-ids": ("/openapi/v1/datasets", lambda i: f"{i['data_name']}@{i['data_version']}"),
    "job-ids": ("/openapi/v1/trainjob", lambda i: i["jobId"]),
}
# (path regex, {parameter: dictionary}): a binding forces its parameter in, so each regex matches
# only paths that have all of its parameters. DELETE is left out, so that the catalog stays.
REPLICA_0 = {"path.taskIndex": "zero", "path.replicaIndex": "zero"}
SPEC = {"query.resourceSpecId": "spec-ids"}
BINDINGS = [
    (r"^/openapi/v1/centers/\{id\}(/metrics)?$", {"path.id": "center-ids"}),
    (r"^/openapi/v1/resourcespecs/\{id\}$", {"path.id": "spec-ids"}),
    (r"^/openapi/v1/images/\{id\}$", {"path.id": "image-ids"}),
    (r"^/openapi/v1/datasets/\{id\}$", {"path.id": "dataset-ids"}),
    (r"^/openapi/v1/trainjob/\{id\}(/explain)?$", {"path.id": "job-ids"}),
    (r"^/openapi/v1/trainjob/\{id\}/task/[^/]+/replica/[^/]+/log$", {"path.id": "job-ids", **REPLICA_0}),
    (r"^/openapi/v1/trainjob/\{jobId\}/stop$", {"path.jobId": "job-ids"}),
    (r"^/openapi/v1/logs/\{jobId\}/\{taskIndex\}/\{replicaIndex\}$", {"path.jobId": "job-ids", **REPLICA_0}),
    (r"^/openapi/v1/events$", {"query.centerId": "center-ids"}),
    (r"^/scheduler/algorithm/[^/]+/score/\{centerId\}$", {"path.centerId": "center-ids", **SPEC}),
    (r"^/scheduler/evaluate/score/\{centerId\}$", {"path.centerId": "center-ids"}),
]


def toml_str(value):
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a TOML basic string


def config(base, out):
    import urllib.request

    dictionaries = {"zero": [0]}
    for name, (path, ident) in LISTS.items():
        with urllib.request.urlopen(f"{base}{path}?pageSize=1000&consistency=stale", timeout=15) as answer:
            items = json.load(answer)["data"]["items"]
        ids = sorted({ident(item) for item in items})
        if ids:
            dictionaries[name] = ids
    statuses = lambda extra=(): f"[{', '.join(toml_str(s) for s in [*ACCEPTED, *extra])}]"  # noqa: E731
    lines = [
        "# Written by .ci/api-fuzz-helper.py config.",
        "# No state across runs (else schemathesis keeps requests to replay and crashes in .schemathesis/).",
        "[cache]",
        "enabled = false",
        "",
        "# Refusals of schema-valid requests that are no finding: a missing object (404), a conflict",
        "# with the stored state (409), a body naming an object that does not exist (422).",
        "[checks.positive_data_acceptance]",
        f"expected-statuses = {statuses()}",
        "",
    ]
    for operation, rules in INEXPRESSIBLE.items():
        lines += [f"# {operation} also refuses valid data with 400 for rules JSON Schema cannot state:"]
        lines += [f"#   - {why}" for why, _ in rules]
        lines += [
            "# (`api-fuzz-helper.py audit` fails the run on a 400 here for any other reason.)",
            "[[operations]]",
            # "METHOD /path": exactly one operation (include-path and include-method would be
            # or-ed: every operation on the path, and every one with the method)
            f"include-name = {toml_str(operation)}",
            f"checks.positive_data_acceptance.expected-statuses = {statuses(['400'])}",
            "",
        ]
    for name, values in dictionaries.items():
        lines += [f"[dictionaries.{name}]", f"values = [{', '.join(toml_str(v) for v in values)}]", ""]
    for regex, parameters in BINDINGS:
        bound = {p: d for p, d in parameters.items() if d in dictionaries}
        if not bound:
            continue
        table = ", ".join(
            f"{toml_str(p)} = {{ dictionary = {toml_str(d)}, probability = 0.5 }}" for p, d in bound.items()
        )
        lines += [
            "[[operations]]",
            f"include-path-regex = {toml_str(regex)}",
            'exclude-method = "DELETE"',  # (include filters are or-ed: no include-method here)
            f"parameters = {{ {table} }}",
            "",
        ]
    pathlib.Path(out).write_text("\n".join(lines))
    print(", ".join(f"{len(v)} {k}" for k, v in dictionaries.items() if k != "zero"))


def audit(args):
    if not any(pathlib.Path(args.report_dir).rglob("*.ndjson")):
        print(f"no schemathesis reports (*.ndjson) in {args.report_dir}")
        return 1
    findings, _, explained = load(args.report_dir)
    total = sum(explained.values())
    print(f"400s for schema-valid requests, by rule JSON Schema cannot state: {total}")
    for (operation, why), count in sorted(explained.items()):
        print(f"- {operation}: {why} [{count}]")
    unexplained = {k: v for k, v in findings.items() if v["title"] == UNEXPLAINED}
    for (operation, _, _, _, why), entry in sorted(unexplained.items()):
        print(f"- UNEXPLAINED {operation}: 400 {why} [{entry['cases']}]")
    return 1 if unexplained else 0


def report(args):
    findings, errors, _ = load(args.report_dir)
    if errors:
        print(f"{len(errors)} distinct errors (no response to check):")
        for (operation, kind, message), count in sorted(errors.items()):
            print(f"- {operation}: {kind}: {message} [{count}]")
    if not findings:
        print("no failed checks")
        return
    # The log's summary: per check and gist, the operations it failed on.
    by_check = {}
    for (operation, code, _, what, _), entry in findings.items():
        by_check.setdefault((code, entry["title"], what), set()).add(operation)
    print(f"{len(findings)} distinct failures (operation, check, the server's reason); by check:")
    for (code, title, what), operations in sorted(by_check.items()):
        print(f"- {code or '-'} {title}, {what}: {len(operations)} operation(s)")
        print(pack(sorted(operations)))
    if not args.markdown:
        return
    out = [
        "# schemathesis findings\n",
        "One entry per operation, check and reason the server gave; its shortest reproduction, for a "
        "node started with `jcs serve --demo` (JCS=http://127.0.0.1:8080).\n",
    ]
    if errors:
        out.append("## Errors (no response to check)\n")
        for (operation, kind, message), count in sorted(errors.items()):
            out.append(f"- {operation}: {kind}: {message} ({count}×)")
        out.append("\n## Failed checks\n")
    for (operation, code, check, what, why), entry in sorted(findings.items()):
        out.append(f"### {operation} — {code} {entry['title']} ({check}): {what} {why}\n")
        out.append(f"{entry['cases']} failing test case(s).\n")
        if entry["examples"]:
            failure, interaction, case = min(
                entry["examples"], key=lambda e: len(curl(e[1]["request"], args.base))
            )
            phase = ((case.get("meta") or {}).get("phase") or {}).get("name", "?")
            mode = ((case.get("meta") or {}).get("generation") or {}).get("mode", "?")
            response = interaction.get("response") or {}
            body = decode(response.get("content")).decode(errors="replace")
            out.append(f"Phase {phase}, {mode} data. {failure.get('message', '').strip()}\n")
            out.append("```sh\n" + curl(interaction["request"], args.base) + "\n```\n")
            out.append(f"→ {response.get('status_code')} `{body[:600]}`\n")
    pathlib.Path(args.markdown).write_text("\n".join(out))
    print(f"details: {args.markdown}")


def main():
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    write = commands.add_parser("config")
    write.add_argument("base")
    write.add_argument("out")
    check = commands.add_parser("audit")
    check.add_argument("report_dir")
    condense = commands.add_parser("report")
    condense.add_argument("report_dir")
    condense.add_argument("--base", default="$JCS")
    condense.add_argument("--markdown")
    args = parser.parse_args()
    if args.command == "config":
        return config(args.base, args.out)
    if args.command == "audit":
        return audit(args)
    return report(args)


if __name__ == "__main__":
    sys.exit(main())
