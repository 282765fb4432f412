"""What `fredset inspect` says about a file, as a dict (for --json) and as text."""

from __future__ import annotations

from typing import Any

from fredset import Artifact, FileInfo


def file_report(artifact: Artifact, info: FileInfo) -> dict[str, Any]:
    metadata = info.metadata
    height, width = artifact.image_size
    return {
        "path": info.path,
        "format_version": info.format_version,
        "checksum": {"algorithm": "sha256", "status": "ok", "value": info.sha256},
        "file_bytes": info.file_bytes,
        "decoded_float32_bytes": artifact.decoded_bytes,
        "compression_ratio": round(artifact.decoded_bytes / info.file_bytes, 2),
        "dataset": artifact.dataset,
        "dataset_license": artifact.dataset_license,
        "classes": artifact.classes,
        "num_classes": artifact.num_classes,
        "image": {"channels": artifact.channels, "height": height, "width": width},
        "normalization": {"mean": list(artifact.mean), "std": list(artifact.std)},
        "transform": metadata["transform"],
        "k": artifact.k,
        "instances_per_class": artifact.counts,
        "num_instances": artifact.num_instances,
        "coefficients": info.encoding,
        "recommended_lr": artifact.provenance.get("recommended_lr"),
        "provenance": artifact.provenance,
        "license": artifact.license,
        "citation": artifact.citation,
    }


def format_report(report: dict[str, Any]) -> str:
    image, encoding, provenance = report["image"], report["coefficients"], report["provenance"]
    counts = report["instances_per_class"]
    per_class = (f"{counts[0]} per class" if len(set(counts)) == 1
                 else f"{min(counts)}-{max(counts)} per class ({', '.join(map(str, counts[:20]))}"
                      f"{', ...' if len(counts) > 20 else ''})")
    classes = ", ".join(report["classes"][:10]) + (", ..." if report["num_classes"] > 10 else "")
    plane = image["height"] * image["width"]
    stats = ", ".join(f"{m:.4g}/{s:.4g}" for m, s in zip(report["normalization"]["mean"],
                                                        report["normalization"]["std"]))
    encoding_text = encoding["dtype"] + (", byte-shuffled" if encoding["shuffle"] and encoding["dtype"] != "int8"
                                         else "") + f", {encoding['compression']}"
    library = provenance.get("library", {})
    made = [f"{key} {provenance[key]}" for key in ("objective", "parameterization", "seed", "iterations")
            if provenance.get(key) is not None]
    if isinstance(provenance.get("budget"), dict) and "ipc" in provenance["budget"]:
        made.append(f"ipc {provenance['budget']['ipc']}")
    lines = [
        f"{report['path']}: fredset format {report['format_version']}, checksum ok "
        f"(sha256 {report['checksum']['value'][:16]}...)",
        f"  dataset         {report['dataset']}: {report['num_classes']} classes ({classes})",
        f"  images          {image['channels']}x{image['height']}x{image['width']}, normalised "
        f"(mean/std {stats})",
        f"  instances       {report['num_instances']}, {per_class}",
        f"  frequencies     k = {report['k']} of {plane} per class ({100 * report['k'] / plane:.1f}%), "
        f"{report['transform']}",
        f"  coefficients    {encoding_text}",
        f"  file size       {report['file_bytes']:,} bytes",
        f"  decoded size    {report['decoded_float32_bytes']:,} bytes as float32 "
        f"({report['compression_ratio']:g}x the file)",
        f"  made by         {library.get('name', '?')} {library.get('version', '?')} on {provenance.get('created', '?')}"
        + (f"; {', '.join(made)}" if made else ""),
    ]
    if report["recommended_lr"] is not None:
        lines.append(f"  recommended lr  {report['recommended_lr']:g}")
    for key, label in (("license", "licence"), ("dataset_license", "data licence"), ("citation", "citation")):
        if report[key]:
            text = " ".join(str(report[key]).split())
            lines.append(f"  {label:<15} {text[:100]}{'...' if len(text) > 100 else ''}")
    for key, label in (("grid_png", "images written"), ("masks_png", "masks written")):
        if key in report:
            lines.append(f"  {label:<15} {report[key]}")
    return "\n".join(lines)
