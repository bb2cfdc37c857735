"""``gpu-console inventory import-netbox URL --site SITE --provider PROVIDER``: nodes and topology from NetBox.

Writes a new inventory, or merges into the one given with ``-o``: new nodes are added with their rack, power feed,
cooling loop and NVLink domain; nodes the inventory already has keep their own settings and only gain topology
keys they lack. The result is validated like any inventory before it replaces the file, so a failed import never
leaves a broken one. Exit codes: 0 written, 1 a usage or inventory problem, 2 NetBox unreachable or refusing.
"""

from __future__ import annotations

import argparse
import os
import sys

from console.cli.bounds import seconds
from console.config.fleet import SecretKind, SecretRef, SourceKind

HELP = "build or update the inventory from another system of record (NetBox)"

EXIT_USAGE = 1
EXIT_NETBOX = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="inventory_action", metavar="ACTION", required=True)
    netbox = actions.add_parser("import-netbox", help="nodes of one NetBox site, with their rack and power feed")
    netbox.add_argument("url", help="NetBox's base URL, e.g. https://netbox.example.com")
    netbox.add_argument("--site", required=True, help="the NetBox site (slug or name); also the inventory site name")
    netbox.add_argument("--provider", required=True, help="the provider the site belongs to (aws, coreweave, onprem)")
    netbox.add_argument("--inventory-site", metavar="NAME", help="name of the site in the inventory (default: --site)")
    netbox.add_argument("--token-env", metavar="VAR", help="environment variable holding the NetBox API token")
    netbox.add_argument("--role", default="gpu-node", help="device role slug of GPU nodes (default: %(default)s)")
    netbox.add_argument("--dcgm", metavar="TEMPLATE", help='dcgm-exporter URL, e.g. "http://{primary_ip}:9400/metrics"')
    netbox.add_argument("--redfish", metavar="TEMPLATE", help='BMC URL, e.g. "https://{oob_ip}"')
    netbox.add_argument("--redfish-user", metavar="USER", help="BMC user for the redfish sources")
    netbox.add_argument("--redfish-password-env", metavar="VAR", help="environment variable of the BMC password")
    netbox.add_argument("-o", "--output", metavar="FILE", help="inventory to write or merge into (default: stdout)")
    netbox.add_argument("--timeout", type=seconds, default=30.0, metavar="S", help="seconds per request")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from console.config.inventory import InventoryError
    from console.config.inventory_merge import merge_import, write_inventory
    from console.config.netbox import NetBoxClient, NetBoxError, SourceTemplate, import_site

    templates = []
    if args.dcgm:
        templates.append(SourceTemplate(SourceKind.DCGM, args.dcgm))
    if args.redfish:
        password = SecretRef(SecretKind.ENV, args.redfish_password_env) if args.redfish_password_env else None
        templates.append(SourceTemplate(SourceKind.REDFISH, args.redfish, user=args.redfish_user, password=password))
    elif args.redfish_user or args.redfish_password_env:
        print("gpu-console: --redfish-user and --redfish-password-env need --redfish TEMPLATE", file=sys.stderr)
        return EXIT_USAGE
    if not templates:
        print("gpu-console: give at least one source template (--dcgm or --redfish)", file=sys.stderr)
        return EXIT_USAGE
    token = None
    if args.token_env:
        token = os.environ.get(args.token_env)
        if not token:
            print(f"gpu-console: environment variable {args.token_env} (--token-env) is not set", file=sys.stderr)
            return EXIT_USAGE
    output = Path(args.output).expanduser() if args.output else None
    site_name = args.inventory_site or args.site
    try:
        client = NetBoxClient(args.url, token, timeout_s=args.timeout)
        imported = import_site(client, args.site, site_name, tuple(templates), args.role)
    except NetBoxError as exc:
        print(f"gpu-console: {exc}", file=sys.stderr)
        return EXIT_NETBOX
    for skipped in imported.skipped:
        print(f"gpu-console: skipped {skipped.name}: {skipped.reason}", file=sys.stderr)
    try:
        text, summary = merge_import(output, imported, args.provider)
        if output is None:
            sys.stdout.write(text)
        else:
            write_inventory(output, text)
    except (InventoryError, OSError) as exc:
        print(f"gpu-console: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"gpu-console: {summary.added} nodes added, {summary.kept} kept, {len(imported.skipped)} skipped "
        f"({imported.racks} racks, {imported.power_feeds} power feeds at {args.site})",
        file=sys.stderr,
    )
    return 0
