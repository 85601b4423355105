"""cas du: store size, per-image size with shared and unique bytes, and what a prune would reclaim."""

from __future__ import annotations

import time

from cli import options, output


def du(as_json: options.Json = False) -> None:
    """Show disk usage: each image's size, its unique and shared bytes, and what `cas prune` would free."""
    from cas.store import Store
    from cas.usage import usage

    report = usage(Store())
    if as_json:
        output.emit_json(report)
        return
    size = output.human_size
    now = time.time()
    if report["images"]:
        rows = [("REFERENCE", "PLATFORM", "SIZE", "UNIQUE", "SHARED", "LAST USED")]
        for image in report["images"]:
            flag = "  (needs pull)" if image["needs_pull"] else ""
            used = output.ago(image["used"], now) if image["used"] else "-"
            rows.append(
                (
                    image["ref"],
                    image["platform"] or "-",
                    size(image["size"]),
                    size(image["unique"]),
                    size(image["shared"]),
                    used + flag,
                )
            )
        output.table(rows)
        print()
    total, ref = report["total"], report["referenced"]
    print(f"store:       {report['root']}")
    print(f"blobs:       {total['blobs']} files, {size(total['bytes'])}")
    print(
        f"images:      {len(report['images'])}, referencing {ref['blobs']} blobs, {size(ref['bytes'])} ({size(ref['shared_bytes'])} shared)"
    )
    ingest = report["ingest"]
    if ingest["entries"]:
        print(f"downloads:   {ingest['entries']} in ingest/ ({ingest['active']} active), {size(ingest['bytes'])}")
    reclaim = report["reclaimable"]
    if "error" in reclaim:
        print(f"reclaimable: unknown ({reclaim['error']})")
    else:
        parts = [f"{reclaim['blobs']} blobs"]
        if reclaim["stray_files"]:
            parts.append(f"{reclaim['stray_files']} stray files")
        if reclaim["ingests"]:
            parts.append(f"{reclaim['ingests']} stale downloads")
        print(f"reclaimable: {size(reclaim['bytes'])} by `cas prune` ({', '.join(parts)})")
