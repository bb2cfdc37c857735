"""``gpu-console probe KIND TARGET``: poll one source once and print what it reported.

Exit codes: 0 ok, 2 unreachable or timed out, 3 authentication refused, 4 unparseable payload, 1 anything else
(bad options, argparse's usage errors too, a malformed URL, a source that cannot be created); every failure
prints one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from console.cli.bounds import seconds
from console.config.fleet import SecretKind, SecretRef, SourceKind, SourceSpec

HELP = "poll one source once and print the normalized sample (a table, or JSON with --json)"

PROBE_KINDS = (
    SourceKind.NVML,
    SourceKind.DCGM,
    SourceKind.AGENT,
    SourceKind.SSH,
    SourceKind.REDFISH,
    SourceKind.PROMETHEUS,
)
URL_KINDS = (SourceKind.DCGM, SourceKind.AGENT, SourceKind.REDFISH, SourceKind.PROMETHEUS)
DEFAULT_TIMEOUT_S = 5.0
EXIT_USAGE = 1  # console.polling.probe's EXIT_OTHER: bad options or a malformed TARGET, never 2 ("unreachable")
_VALUE_OPTIONS = (
    "user",
    "password_env",
    "password_file",
    "token_env",
    "token_file",
    "key_file",
    "known_hosts",
    "port",
    "ca_file",
)


class ProbeUsageError(ValueError):
    """Options that do not fit the kind; the message is shown as is."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # argparse's own usage errors exit 2, which for probe means "unreachable": make them the usage code, 1.
    def usage_error(message: str) -> NoReturn:
        parser.print_usage(sys.stderr)
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {message}\n")

    parser.error = usage_error  # type: ignore[method-assign]
    parser.add_argument("kind", choices=[str(kind) for kind in PROBE_KINDS], help="the kind of source")
    parser.add_argument(
        "target",
        help='a URL (dcgm, agent, redfish, prometheus: its base URL), [user@]host (ssh), or "local" (nvml)',
    )
    parser.add_argument("--user", help="user name (redfish, prometheus, ssh)")
    parser.add_argument(
        "--password-env", metavar="VAR", help="environment variable holding the password (redfish, prometheus)"
    )
    parser.add_argument("--password-file", metavar="FILE", help="file holding the password (redfish, prometheus)")
    parser.add_argument(
        "--token-env", metavar="VAR", help="environment variable holding the bearer token (agent, prometheus)"
    )
    parser.add_argument("--token-file", metavar="FILE", help="file holding the bearer token (agent, prometheus)")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra request header, e.g. X-Scope-OrgID=tenant-1 (prometheus; repeatable)",
    )
    parser.add_argument(
        "--node", metavar="NAME", help="the node (its Hostname label) to print (prometheus; default: every node)"
    )
    parser.add_argument("--key-file", metavar="FILE", help="private key (ssh)")
    parser.add_argument("--known-hosts", metavar="FILE", help="known_hosts file (ssh; default: the user's)")
    parser.add_argument("--port", type=int, help="port (ssh; for URLs put the port in the URL)")
    parser.add_argument("--ca-file", metavar="FILE", help="CA bundle to verify the server's certificate")
    parser.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")
    parser.add_argument(
        "--timeout", type=seconds, default=DEFAULT_TIMEOUT_S, metavar="S", help="seconds (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print the sample as the schema's JSON")


def build_spec(args: argparse.Namespace) -> SourceSpec:
    """The ``SourceSpec`` the options describe; ``ProbeUsageError`` names an option that does not fit."""
    kind = SourceKind(args.kind)
    target: str = args.target
    allowed = {
        SourceKind.NVML: set(),
        SourceKind.DCGM: {"ca_file", "insecure"},
        SourceKind.AGENT: {"token_env", "token_file", "ca_file", "insecure"},
        SourceKind.REDFISH: {"user", "password_env", "password_file", "ca_file", "insecure"},
        SourceKind.SSH: {"user", "key_file", "known_hosts", "port"},
        SourceKind.PROMETHEUS: {
            "user",
            "password_env",
            "password_file",
            "token_env",
            "token_file",
            "ca_file",
            "insecure",
            "header",
            "node",
        },
    }[kind]
    for option in _VALUE_OPTIONS:
        if getattr(args, option) is not None and option not in allowed:
            raise ProbeUsageError(f"--{option.replace('_', '-')} does not apply to {kind}")
    for option in ("header", "node"):
        if getattr(args, option, None) and option not in allowed:
            raise ProbeUsageError(f"--{option} does not apply to {kind}")
    if args.insecure and "insecure" not in allowed:
        raise ProbeUsageError(f"--insecure does not apply to {kind}")
    if args.timeout is None or not args.timeout > 0:
        raise ProbeUsageError("--timeout must be > 0")
    if kind is SourceKind.NVML:
        if target != "local":
            raise ProbeUsageError('nvml reads this machine\'s GPUs: TARGET must be "local"')
        return SourceSpec(kind=kind)
    if kind is SourceKind.SSH:
        return _ssh_spec(args)
    if not target.lower().startswith(("http://", "https://")):
        raise ProbeUsageError(f"{kind} needs a URL starting with http:// or https://, got {target!r}")
    _check_url(target)
    token = _secret(args.token_env, args.token_file, "token")
    password = _secret(args.password_env, args.password_file, "password")
    if kind is SourceKind.PROMETHEUS:
        if token is not None and (args.user is not None or password is not None):
            raise ProbeUsageError("give either --user with a password or a token, not both")
        if (args.user is None) != (password is None):
            raise ProbeUsageError("basic auth needs both --user and --password-env (or --password-file)")
    return SourceSpec(
        kind=kind,
        url=target,
        user=args.user,
        token=token,
        password=password,
        verify_tls=not args.insecure,
        ca_file=args.ca_file,
        options=(("host", args.node),) if getattr(args, "node", None) else (),
        headers=_headers(getattr(args, "header", None) or []),
    )


def _headers(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    """``--header NAME=VALUE`` checked as the inventory checks ``headers`` (no credentials, no line breaks)."""
    from console.config.inventory import read_headers
    from console.config.validation import Problems

    table: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            raise ProbeUsageError(f"--header wants NAME=VALUE, got {pair!r}")
        table[name.strip()] = value
    problems = Problems()
    headers = read_headers({"headers": table}, "--header", problems)
    if problems.items:
        shown = [problem.removeprefix("--header.headers.") for problem in problems.items]
        raise ProbeUsageError("--header " + "; ".join(shown))
    return headers


def _check_url(target: str) -> None:
    """A malformed URL is the caller's mistake (exit 1), not an unreachable target (exit 2)."""
    from urllib.parse import urlsplit

    if any(char.isspace() for char in target):
        raise ProbeUsageError(f"the URL {target!r} contains whitespace")
    try:
        parts = urlsplit(target)
        parts.port  # noqa: B018 - evaluating it validates the port
    except ValueError as exc:
        raise ProbeUsageError(f"malformed URL {target!r}: {exc}") from None
    if not parts.hostname:
        raise ProbeUsageError(f"the URL {target!r} has no host name")


def _ssh_spec(args: argparse.Namespace) -> SourceSpec:
    user, at, host = str(args.target).rpartition("@")
    if not at:
        user = ""
    host = host.removeprefix("[").removesuffix("]")  # [::1] -> ::1
    if not host or "/" in host:
        raise ProbeUsageError(f"ssh needs [user@]host, got {args.target!r}")
    if user and args.user and user != args.user:
        raise ProbeUsageError(f"two different users: {user!r} in TARGET and --user {args.user!r}")
    if args.port is not None and not 1 <= args.port <= 65535:
        raise ProbeUsageError("--port must be between 1 and 65535")
    return SourceSpec(
        kind=SourceKind.SSH,
        host=host,
        port=args.port,
        user=user or args.user,
        key_file=args.key_file,
        known_hosts=args.known_hosts,
    )


def _secret(env: str | None, file: str | None, what: str) -> SecretRef | None:
    if env is not None and file is not None:
        raise ProbeUsageError(f"give the {what} by --{what}-env or --{what}-file, not both")
    if env is not None:
        return SecretRef(SecretKind.ENV, env)
    if file is not None:
        return SecretRef(SecretKind.FILE, file)
    return None


def _quiet_logging(args: argparse.Namespace) -> None:
    """The outcome is the one line on stderr; library chatter (asyncssh logs every connect at INFO) is noise.

    --log-level DEBUG still shows everything.
    """
    import logging

    if getattr(args, "log_level", "INFO") != "DEBUG":
        root = logging.getLogger()
        root.setLevel(max(root.level, logging.WARNING))


def run(args: argparse.Namespace) -> int:
    import json

    from console.polling.probe import EXIT_OTHER, format_sample_table, probe
    from console.samples.codec import sample_to_json

    _quiet_logging(args)
    try:
        spec = build_spec(args)
    except ProbeUsageError as exc:
        print(f"gpu-console probe: {exc}", file=sys.stderr)
        return EXIT_OTHER
    if spec.kind is SourceKind.PROMETHEUS and not spec.option("host"):
        return _print_site(spec, args)
    outcome = probe(spec, timeout_s=args.timeout, node=spec.option("host") or "probe")
    if outcome.sample is None:
        print(f"probe {spec.kind} {spec.target()}: {outcome.summary()}", file=sys.stderr)
        return outcome.exit_code
    if outcome.note:
        print(f"probe {spec.kind} {spec.target()}: {outcome.summary()}", file=sys.stderr)
    text = json.dumps(sample_to_json(outcome.sample), indent=2) + "\n" if args.json else None
    _write(text if text is not None else format_sample_table(outcome.sample))
    return outcome.exit_code


def _print_site(spec: SourceSpec, args: argparse.Namespace) -> int:
    """Every node a Prometheus holds: a table per node, or a JSON array of samples."""
    import json

    from console.polling.probe import format_sample_table, probe_site
    from console.samples.codec import sample_to_json

    outcome = probe_site(spec, timeout_s=args.timeout)
    print(f"probe {spec.kind} {spec.target()}: {outcome.summary()}", file=sys.stderr)
    if outcome.failure is not None:
        return outcome.exit_code
    if args.json:
        _write(json.dumps([sample_to_json(sample) for sample in outcome.samples], indent=2) + "\n")
    else:
        _write("\n".join(format_sample_table(sample) for sample in outcome.samples))
    return outcome.exit_code


def _write(text: str) -> None:
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `probe ... | head`: the reader left; not an error of the probe
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
