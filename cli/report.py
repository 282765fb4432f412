"""What `fredset inspect` says about a file, as a dict (for --json) and as text."""

from __future__ import annotations

import json
from typing import Any

from fredset import Artifact, FileInfo
from fredset.errors import printable
from fredset.experts import index_ranges


def _text(value: Any, limit: int = 60) -> str:
    """A metadata value in a report line: ``str`` of it, at most ``limit`` characters (then ``...``).

    Free content (provenance is open) may be any JSON value; line breaks and other unprintable
    characters are escaped when the lines are joined (:func:`_lines`).
    """
    text = value if isinstance(value, str) else _json_text(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _json_text(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int) and value.bit_length() > 1100:  # beyond binary64 (the reader refuses those)
        return f"<integer of {value.bit_length()} bits>"  # str() of a huge int is slow, or refused
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False, default=str)[:1000]


def _number(value: Any, spec: str = "g") -> str:
    """A number formatted with ``spec``; any other value (or one the format cannot take) as :func:`_text`."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return format(value, spec)
        except (OverflowError, ValueError):  # an int beyond the float range: the reader refuses those
            pass
    return _text(value)


def _lines(lines: list[str]) -> str:
    """The report's lines, each escaped so a value cannot break it or send terminal escapes (printable)."""
    return "\n".join(printable(line) for line in lines)


def file_report(artifact: Artifact, info: FileInfo, layout: dict[str, Any] | None = None) -> dict[str, Any]:
    """The facts of a file; ``layout`` (:func:`fredset.format.layout.file_layout`) adds where its bytes go."""
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
        "pixel_range": artifact.pixel_range(),
        "recommended_lr": artifact.provenance.get("recommended_lr"),
        "provenance": artifact.provenance,
        "license": artifact.license,
        "citation": artifact.citation,
        **({"bytes": layout} if layout is not None else {}),
    }


def _encoding_text(encoding: dict[str, Any]) -> str:
    if "bits" in encoding:  # format 2.x
        return (f"{encoding['bits']}-bit codes (int8, one per byte) x {encoding['steps']} steps, "
                f"{encoding['compression']}")
    return encoding["dtype"] + (", byte-shuffled" if encoding["shuffle"] and encoding["dtype"] != "int8"
                                else "") + f", {encoding['compression']}"


def _layout_lines(layout: dict[str, Any]) -> list[str]:
    """Where the bytes go: header, HDF5 container, datasets, and in 2.x the sections of /data (estimated)."""
    parts = [f"header {layout['header']:,}", f"HDF5 container {layout['hdf5_container']:,}"]
    for name, size in layout["datasets"].items():
        parts.append(f"/{name} {size:,}" + (f" (JSON {layout['metadata_json']:,})"
                                             if name == "metadata" and layout["metadata_json"] != size else ""))
    lines = [f"  bytes           {', '.join(parts)}"]
    sections = layout.get("data_sections")
    if sections:
        shown = ", ".join(f"{name} {sections[name]['bytes']:,} -> ~{sections[name]['compressed_estimate']:,}"
                          for name in ("masks", "steps", "codes"))
        lines.append(f"  /data sections  {shown} (uncompressed -> estimated share of the frame, each section "
                     f"compressed alone at zstd level {sections['estimate_level']})")
    codes = "codes, estimated" if sections else "/coefficients"
    lines.append(f"  per class       {layout['per_class']:,.1f} bytes; {layout['bits_per_coefficient']:.2f} bits per "
                 f"coefficient ({codes})")
    return lines


def _range_line(pixel_range: dict[str, float | None]) -> str:
    low, high = (f"{value:.3g}" if value is not None else "beyond float64"
                 for value in (pixel_range["min"], pixel_range["max"]))
    return f"  pixel values    {low} .. {high}, {100 * pixel_range['outside']:.1f}% outside [0, 1] (--grid clamps them)"


def format_report(report: dict[str, Any]) -> str:
    image, encoding, provenance = report["image"], report["coefficients"], report["provenance"]
    counts = report["instances_per_class"]
    per_class = (f"{counts[0]} per class" if len(set(counts)) == 1
                 else f"{min(counts)}-{max(counts)} per class ({', '.join(map(str, counts[:20]))}"
                      f"{', ...' if len(counts) > 20 else ''})")
    classes = ", ".join(_text(name, 256) for name in report["classes"][:10]) \
        + (", ..." if report["num_classes"] > 10 else "")
    plane = image["height"] * image["width"]
    stats = ", ".join(f"{_number(m, '.4g')}/{_number(s, '.4g')}" for m, s in zip(report["normalization"]["mean"],
                                                                                report["normalization"]["std"]))
    encoding_text = _encoding_text(encoding)
    library = provenance.get("library", {})
    library = library if isinstance(library, dict) else {}
    made = [f"{key} {_text(provenance[key])}" for key in ("objective", "parameterization", "seed", "iterations")
            if provenance.get(key) is not None]
    if isinstance(provenance.get("budget"), dict) and "ipc" in provenance["budget"]:
        made.append(f"ipc {_text(provenance['budget']['ipc'])}")
    lines = [
        f"{_text(report['path'], 4096)}: fredset format {report['format_version']}, checksum ok "
        f"(sha256 {report['checksum']['value'][:16]}...)",
        f"  dataset         {_text(report['dataset'], 256)}: {report['num_classes']} classes ({classes})",
        f"  images          {image['channels']}x{image['height']}x{image['width']}, normalised "
        f"(mean/std {stats})",
        f"  instances       {report['num_instances']}, {per_class}",
        f"  frequencies     k = {report['k']} of {plane} per class ({100 * report['k'] / plane:.1f}%), "
        f"{report['transform']}",
        f"  coefficients    {encoding_text}",
        f"  file size       {report['file_bytes']:,} bytes",
        f"  decoded size    {report['decoded_float32_bytes']:,} bytes as float32 "
        f"({report['compression_ratio']:g}x the file)",
        *(_layout_lines(report["bytes"]) if "bytes" in report else []),
        _range_line(report["pixel_range"]),
        f"  made by         {_text(library.get('name', '?'))} {_text(library.get('version', '?'))} on "
        f"{_text(provenance.get('created', '?'))}"
        + (f"; {', '.join(made)}" if made else ""),
    ]
    if provenance.get("converted") is not None:  # fredset convert: made by another implementation
        lines.append(f"  origin          {_text(provenance['converted'], 100)}")
    if report["recommended_lr"] is not None:
        lines.append(f"  recommended lr  {_number(report['recommended_lr'])}")
    hyperparameters = provenance.get("hyperparameters")
    buffer = hyperparameters.get("buffer") if isinstance(hyperparameters, dict) else None
    if isinstance(buffer, dict) and buffer.get("fingerprint"):
        lines.append(f"  expert buffer   {_text(buffer.get('experts'))} experts of {_text(buffer.get('dataset'))}, "
                     f"fingerprint {_text(buffer['fingerprint'], 100)[:16]}...")
    for key, label in (("license", "licence"), ("dataset_license", "data licence"), ("citation", "citation")):
        if report[key]:
            text = " ".join(str(report[key]).split())
            lines.append(f"  {label:<15} {text[:100]}{'...' if len(text) > 100 else ''}")
    for key, label in (("grid_png", "images written"), ("masks_png", "masks written")):
        if key in report:
            lines.append(f"  {label:<15} {_text(report[key], 4096)}")
    return _lines(lines)


def format_buffer_summary(summary: dict[str, Any]) -> str:
    """The text `fredset inspect DIR` prints for an expert buffer (summary from ExpertBuffer.summary())."""
    image, training = summary["image"], summary["training"]
    experts = summary["experts"]
    losses = [e["final_train_loss"] for e in experts if e["final_train_loss"] is not None]
    tests = [e["test_accuracy"] for e in experts if e["test_accuracy"] is not None]
    lines = [
        f"{summary['path']}: expert buffer ({summary['format']} version {summary['format_version']})",
        f"  dataset         {summary['dataset']}: {summary['num_images']} images, {image['channels']}x"
        f"{image['height']}x{image['width']}, {summary['num_classes']} classes",
        f"  model           {summary['model']}, {summary['parameters']:,} parameters "
        f"({summary['snapshot_bytes']:,} bytes per snapshot)",
        f"  training        {training['epochs']} epochs, lr {training['lr']:g}, batch {training['batch_size']}, "
        f"{training['optimizer']}, dsa {training['dsa']}, seed {training['seed']}",
        f"  experts         {summary['experts_finished']} of {summary['experts_asked']} finished"
        + (f" ({index_ranges(summary['finished'])})" if summary["finished"] else "")
        + (f"; being trained: {index_ranges(summary['in_progress'])}" if summary["in_progress"] else "")
        + (f"; stale locks (their process died): {index_ranges(summary['stale_locks'])}"
           if summary.get("stale_locks") else ""),
        f"  snapshots       epochs 0..{summary['keep_epochs']} ({summary['snapshots_per_expert']} per expert)",
    ]
    if losses:
        lines.append(f"  final loss      mean {sum(losses) / len(losses):.4f} (min {min(losses):.4f}, "
                     f"max {max(losses):.4f})")
    if tests:
        lines.append(f"  test accuracy   mean {100 * sum(tests) / len(tests):.2f}% (min {100 * min(tests):.2f}%, "
                     f"max {100 * max(tests):.2f}%, {len(tests)} experts)")
    lines += [f"  size            {summary['bytes']:,} bytes on disk",
              f"  fingerprint     {summary['fingerprint']}"]
    return _lines(lines)


def format_corruptions(corruptions: dict[str, Any], test_name: str, test_images: int) -> str:
    """The corruption-robustness table `fredset evaluate --corruptions` prints: a row per family (accuracy mean
    +- std over runs, a column per model), the clean accuracy above and the mean over families below."""
    severities = corruptions["severities"]
    shown = (f"severity {severities[0]}" if len(severities) == 1
             else f"mean of severities {', '.join(map(str, severities))}")
    if corruptions.get("source") == "directory":
        source = f"read from {corruptions['directory']}"
    else:
        size = min(corruptions.get("image_size") or [32])
        source = (f"generated with CIFAR-10-C's constants (spatial ones scaled by {size}/32), seed "
                  f"{corruptions.get('seed')}, synthetic frost")
    families = corruptions["families"]
    lines = [f"corruption robustness: {len(families)} families, {shown}, {test_images} {test_name} test images "
             f"{source}"]
    models = list(corruptions["results"])
    label_width = max([len("mean (15 families)")] + [len(f) for f in families]) + 2

    def row(label: str, cells: list[dict[str, Any]]) -> str:
        text = "".join(f"{cell['mean']:>7.2f} +- {cell['std']:<6.2f}" for cell in cells)
        return f"  {label:<{label_width}}{text}".rstrip()

    lines.append((f"  {'family':<{label_width}}" + "".join(f"  {model:<15}" for model in models)).rstrip())
    lines.append(row("clean", [corruptions["results"][m]["clean"] for m in models]))
    for family in families:
        lines.append(row(family, [corruptions["results"][m]["families"][family] for m in models]))
    if families:
        lines.append(row(f"mean ({len(families)} families)", [corruptions["results"][m]["mean"] for m in models]))
    return _lines(lines)
