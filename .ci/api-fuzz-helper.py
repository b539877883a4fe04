#!/usr/bin/env python3
"""The Python side of .ci/api-fuzz (run with the virtualenv's Python):

    api-fuzz-helper.py config BASE_URL OUT_TOML
        writes schemathesis' configuration for the node at BASE_URL: which refusals of valid data
        are acceptable, and dictionaries of the ids that exist on the node (read from its lists),
        drawn for id parameters half of the time so that reads find objects, not only 404s.

    api-fuzz-helper.py report REPORT_DIR [--base URL] [--markdown FILE]
        condenses schemathesis' NDJSON reports (`--report ndjson`) into distinct failures: an
        operation, the check that failed, the gist of its message (the status received) and the
        server's reason (the field an INVALID_ARGUMENT names, else its code). Prints them by
        check; --markdown also writes each with the shortest reproducing curl command (against
        --base, default $JCS) and the response it got.
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


def reason(interaction):
    """The server's reason, as a class: the field an INVALID_ARGUMENT names, else its code."""
    response = (interaction or {}).get("response") or {}
    try:
        body = json.loads(decode(response.get("content")))
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    code, message = str(body.get("code", "")), str(body.get("errorMsg", ""))
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


def load(report_dir):
    findings, errors = {}, {}
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
                    key = (
                        operation,
                        failure.get("code", ""),
                        check["name"],
                        gist(failure, status),
                        reason(interaction),
                    )
                    entry = findings.setdefault(
                        key, {"cases": 0, "title": failure.get("title", check["name"]), "examples": []}
                    )
                    entry["cases"] += 1
                    if interaction:
                        entry["examples"].append((failure, interaction, case))
    return findings, errors


# positive_data_acceptance fails a schema-valid request that is refused; refusals a schema cannot
# foresee are allowed: schemathesis' defaults (404 a missing object, 409 a conflict with state)
# and 422 UNKNOWN_REFERENCE (docs/ERRORS.md: the body names an object that does not exist).
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

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
    lines = [
        "# Written by .ci/api-fuzz-helper.py config.",
        "[checks.positive_data_acceptance]",
        f"expected-statuses = [{', '.join(toml_str(s) for s in ACCEPTED)}]",
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


def report(args):
    findings, errors = load(args.report_dir)
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
    condense = commands.add_parser("report")
    condense.add_argument("report_dir")
    condense.add_argument("--base", default="$JCS")
    condense.add_argument("--markdown")
    args = parser.parse_args()
    if args.command == "config":
        config(args.base, args.out)
    else:
        report(args)


if __name__ == "__main__":
    sys.exit(main())
