"""cas du: store size, per-image size with shared and unique bytes, and what a prune would reclaim."""

from __future__ import annotations

import time

from cli import options, output


def du(as_json: options.Json = False) -> None:
    """Show disk usage: each image's size, its unique and shared bytes, and what `cas prune` would free.

    Unique bytes are in blobs no other image lists: what `cas rm REF` then `cas prune` frees.

    \b
    Examples:
      cas du
      cas du --json | jq '.images[] | {ref, unique_bytes}'
    """
    from cas.disk_usage import usage
    from cas.store import Store

    report = usage(Store())
    if as_json:
        output.emit_json("du", report)
        return
    size = output.human_size
    now = time.time()
    if report["images"]:
        rows = [("REFERENCE", "PLATFORM", "SIZE", "UNIQUE", "SHARED", "BLOBS", "LAST USED")]
        for image in report["images"]:
            flag = "  (needs pull)" if image["needs_pull"] else ""
            used = output.ago_text(image["used_at"], now) + flag
            shares = (size(image["size"]), size(image["unique_bytes"]), size(image["shared_bytes"]))
            rows.append((image["ref"], image["platform"] or "-", *shares, str(image["blob_count"]), used))
        output.table(rows)
        print()
    r = report
    print(f"store:       {r['root']}")
    print(f"blobs:       {r['stored_blobs']}, {size(r['stored_bytes'])}")
    print(
        f"images:      {len(r['images'])}, referencing {r['referenced_blobs']} blobs, "
        f"{size(r['referenced_bytes'])} ({size(r['shared_bytes'])} shared)"
    )
    if r["download_count"]:
        print(
            f"downloads:   {r['download_count']} in ingest/ ({r['active_downloads']} active), {size(r['download_bytes'])}"
        )
    reclaim = r["reclaimable"]
    if "error" in reclaim:
        print(f"reclaimable: unknown ({reclaim['error']})")
    else:
        parts = [f"{reclaim['blob_count']} blobs"]
        if reclaim["stray_file_count"]:
            parts.append(f"{reclaim['stray_file_count']} stray files")
        if reclaim["stale_download_count"]:
            parts.append(f"{reclaim['stale_download_count']} stale downloads")
        print(f"reclaimable: {size(reclaim['size'])} by `cas prune` ({', '.join(parts)})")
