"""What changed between two builds: a pure diff of two build manifests (lkit.build.manifest) and,
when both were booted, of their boot timelines.

`diff(a, b)` gives grouped `Change` items: files (added, removed, changed, with size deltas and the
image each came from), packages, images, the kernel (version, cmdline, modules), containers
(capabilities, mounts, namespaces, oomScoreAdj, readonly, command...), output files, and boot phases
(`boot_changes`). `BuildDiff.top(n)` ranks them for a short explanation; `explain_figure` and
`explain_check` pick the items that explain one regression of the gate ("initrd +3.4 MB:
/usr/bin/containerd +2.9 MB (lkit/containerd:1.6 -> 1.7), ...").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from lkit.build.manifest import BuildManifest, ContainerRecord, FileRecord, ManifestError, role_of
from lkit.report.figures import MAD_TO_SIGMA, human_bytes

# How groups rank in a short explanation: privileges first, then what a reviewer asks about first.
GROUPS = ("containers", "kernel", "packages", "images", "files", "outputs", "boot")
BOOT_MIN_SECONDS = 0.5   # smaller boot-phase changes are TCG jitter


@dataclass
class Change:
    """One difference, in one readable line (`text`), with what ranks and groups it."""

    group: str              # files, packages, images, kernel, containers, outputs, boot
    subject: str            # a path, package, container slot, artifact or boot phase
    kind: str               # added, removed, changed
    text: str
    delta: float = 0.0      # bytes (files, outputs) or seconds (boot)
    slot: str = ""          # the image slot (kernel, init/lkit/runc, services/nginx, files ...)
    format: str = ""        # outputs and boot: the output format
    where: str = ""         # the spec line, for containers
    privilege: bool = False  # a container gained a capability, a host namespace, write access...
    before: Any = None
    after: Any = None

    def rank(self) -> tuple[int, int, float, str]:
        order = 0 if self.privilege else 1 + GROUPS.index(self.group)
        return (order, 0 if self.kind != "changed" or self.group != "files" else 1, -abs(self.delta), self.subject)


@dataclass
class BuildDiff:
    """Every change from build `a` to build `b`, grouped."""

    a: str
    b: str
    changes: list[Change] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes

    def group(self, name: str, fmt: str | None = None) -> list[Change]:
        return [c for c in self.changes if c.group == name and (fmt is None or not c.format or c.format == fmt)]

    def top(self, n: int = 3, groups: Iterable[str] | None = None, fmt: str | None = None) -> list[Change]:
        """The `n` changes that matter most (privileges, kernel, packages, then the biggest files)."""
        wanted = set(groups) if groups is not None else set(GROUPS)
        pool = [c for c in self.changes if c.group in wanted and (fmt is None or not c.format or c.format == fmt)]
        return sorted(pool, key=Change.rank)[:n]

    def to_json(self) -> dict[str, Any]:
        return {"kind": "lkit-diff", "a": self.a, "b": self.b, "identical": self.empty,
                "changes": [{k: v for k, v in asdict(c).items() if v not in (None, "", False) or k == "delta"}
                            for c in sorted(self.changes, key=lambda c: (GROUPS.index(c.group), c.rank()))]}

    def lines(self, limit: int = 20) -> list[str]:
        """A readable, grouped diff: each group's items biggest first, files summed per image."""
        if self.empty:
            return [f"{self.a} and {self.b}: identical builds"]
        out = [f"{self.a} -> {self.b}"]
        for name in GROUPS:
            items = sorted(self.group(name), key=Change.rank)
            if not items:
                continue
            if name == "files":
                out += _file_lines(items, limit)
                continue
            out.append(f"{name}:")
            out += [f"  {c.format}: {c.text}" if c.group == "boot" else f"  {c.text}" for c in items[:limit]]
            if len(items) > limit:
                out.append(f"  ... and {len(items) - limit} more")
        return out


def _file_lines(items: list[Change], limit: int) -> list[str]:
    counts = {k: sum(1 for c in items if c.kind == k) for k in ("added", "removed", "changed")}
    total = sum(c.delta for c in items)
    out = [f"files: {counts['added']} added, {counts['removed']} removed, {counts['changed']} changed, "
           f"{_signed_bytes(total)} in all"]
    by_slot: dict[str, list[Change]] = {}
    for c in items:
        by_slot.setdefault(c.slot, []).append(c)
    for slot, changes in sorted(by_slot.items(), key=lambda kv: (-abs(sum(c.delta for c in kv[1])), kv[0])):
        out.append(f"  {slot}: {_signed_bytes(sum(c.delta for c in changes))} in {len(changes)} file(s)")
        out += [f"    {c.text}" for c in changes[:limit]]
        if len(changes) > limit:
            out.append(f"    ... and {len(changes) - limit} more")
    return out


def _signed_bytes(n: float) -> str:
    return ("+" if n >= 0 else "-") + human_bytes(abs(n))


def _signed_seconds(s: float) -> str:
    return f"{'+' if s >= 0 else '-'}{abs(s):.1f} s"


# ---- relatedness ----------------------------------------------------------------------------------


def check_related(a: BuildManifest, b: BuildManifest, a_where: str = "A", b_where: str = "B") -> None:
    """Two builds are comparable when they share a name, a container, or most of their init images."""
    if a.name == b.name:
        return
    if set(a.containers) & set(b.containers):
        return
    init_a = {s for s in a.images if s.startswith("init/")}
    init_b = {s for s in b.images if s.startswith("init/")}
    if init_a and init_b and len(init_a & init_b) * 2 >= max(len(init_a), len(init_b)) and not (a.containers or b.containers):
        return
    raise ManifestError(
        f"the builds look unrelated: {a_where} is spec {a.name!r} (containers {_names(a)}), "
        f"{b_where} is spec {b.name!r} (containers {_names(b)}); they share no name and no container",
        hint="diff two builds of the same spec (or two revisions of it); --force diffs them anyway")


def _names(m: BuildManifest) -> str:
    return ", ".join(sorted(c.name for c in m.containers.values())) or "none"


# ---- the diff ---------------------------------------------------------------------------------------


def diff(a: BuildManifest, b: BuildManifest, *, a_label: str = "", b_label: str = "",
         force: bool = False) -> BuildDiff:
    """Every change from `a` to `b` (ManifestError when they are unrelated, unless `force`)."""
    a_label, b_label = a_label or a.name, b_label or b.name
    if not force:
        check_related(a, b, a_label, b_label)
    result = BuildDiff(a_label, b_label)
    result.changes += _images(a, b)
    result.changes += _packages(a, b)
    result.changes += _kernel(a, b)
    result.changes += _containers(a, b)
    result.changes += _files(a, b)
    result.changes += _outputs(a, b)
    return result


def _ref_change(a: BuildManifest, b: BuildManifest, slot: str) -> str:
    """'lkit/containerd:1.6 -> 1.7', 'lkit/nginx:1.22' (same ref), '' (unknown slot)."""
    ia, ib = a.images.get(slot), b.images.get(slot)
    if ia is None and ib is None:
        return ""
    if ia is None or ib is None:
        return (ib or ia).ref  # type: ignore[union-attr]
    if ia.ref == ib.ref:
        return ia.ref
    ra, rb = ia.ref.rsplit(":", 1), ib.ref.rsplit(":", 1)
    if len(ra) == len(rb) == 2 and ra[0] == rb[0]:
        return f"{ia.ref} -> {rb[1]}"
    return f"{ia.ref} -> {ib.ref}"


def _images(a: BuildManifest, b: BuildManifest) -> list[Change]:
    out = []
    for slot in sorted(set(a.images) | set(b.images)):
        ia, ib = a.images.get(slot), b.images.get(slot)
        if ia is None and ib is not None:
            out.append(Change("images", slot, "added", f"+ {slot}: {ib.ref}", slot=slot, after=ib.ref))
        elif ib is None and ia is not None:
            out.append(Change("images", slot, "removed", f"- {slot}: {ia.ref}", slot=slot, before=ia.ref))
        elif ia is not None and ib is not None and (ia.ref != ib.ref or ia.digest != ib.digest):
            what = _ref_change(a, b, slot) if ia.ref != ib.ref else f"{ia.ref} rebuilt"
            out.append(Change("images", slot, "changed",
                              f"~ {slot}: {what} ({ia.digest[7:19]} -> {ib.digest[7:19]})", slot=slot,
                              before=ia.digest, after=ib.digest))
    return out


def _packages(a: BuildManifest, b: BuildManifest) -> list[Change]:
    out = []
    for slot in sorted(set(a.images) & set(b.images)):
        pa, pb = a.images[slot].packages, b.images[slot].packages
        if pa is None or pb is None or pa == pb:
            continue
        for name in sorted(set(pa) | set(pb)):
            va, vb = pa.get(name), pb.get(name)
            if va == vb:
                continue
            subject = f"{slot} {name}"
            if va is None:
                out.append(Change("packages", subject, "added", f"+ {name} {vb} ({slot})", slot=slot, after=vb))
            elif vb is None:
                out.append(Change("packages", subject, "removed", f"- {name} {va} ({slot})", slot=slot, before=va))
            else:
                out.append(Change("packages", subject, "changed", f"~ {name} {va} -> {vb} ({slot})", slot=slot,
                                  before=va, after=vb))
    return out


def _kernel(a: BuildManifest, b: BuildManifest) -> list[Change]:
    ka, kb = a.kernel, b.kernel
    if ka is None and kb is None:
        return []
    if ka is None or kb is None:
        return [Change("kernel", "kernel", "added" if ka is None else "removed",
                       "kernel added" if ka is None else "kernel removed", slot="kernel")]
    out = []
    if ka.version != kb.version:
        out.append(Change("kernel", "version", "changed", f"version {ka.version} -> {kb.version}", slot="kernel",
                          before=ka.version, after=kb.version))
    if ka.cmdline != kb.cmdline:
        out.append(Change("kernel", "cmdline", "changed", f"cmdline {ka.cmdline!r} -> {kb.cmdline!r}", slot="kernel",
                          before=ka.cmdline, after=kb.cmdline))
    added, removed = sorted(set(kb.modules) - set(ka.modules)), sorted(set(ka.modules) - set(kb.modules))
    if added or removed:
        parts = [f"+{m}" for m in added] + [f"-{m}" for m in removed]
        out.append(Change("kernel", "modules", "changed", "modules " + " ".join(parts), slot="kernel",
                          before=removed, after=added))
    if ka.sha256 != kb.sha256:
        out.append(Change("kernel", "binary", "changed",
                          f"kernel binary {human_bytes(ka.size)} -> {human_bytes(kb.size)} "
                          f"({_signed_bytes(kb.size - ka.size)})", delta=kb.size - ka.size, slot="kernel"))
    return out


def _caps_text(name: str, ca: dict[str, list[str]], cb: dict[str, list[str]]) -> tuple[list[str], bool]:
    """'gained CAP_NET_RAW', per set when the sets differ; and whether anything was gained."""
    gained = {s: sorted(set(cb.get(s, [])) - set(ca.get(s, []))) for s in set(ca) | set(cb)}
    lost = {s: sorted(set(ca.get(s, [])) - set(cb.get(s, []))) for s in set(ca) | set(cb)}
    parts = []
    for verb, by_set in (("gained", gained), ("lost", lost)):
        distinct = {tuple(v) for v in by_set.values() if v}
        if not distinct:
            continue
        if len(distinct) == 1 and all(by_set.get(s) for s in ("effective", "bounding") if s in by_set):
            parts.append(f"{name} {verb} {' '.join(distinct.pop())}")
        else:
            for s in sorted(by_set):
                if by_set[s]:
                    parts.append(f"{name} {verb} {' '.join(by_set[s])} ({s})")
    return parts, any(gained.get(s) for s in ("effective", "permitted", "bounding", "ambient"))


def _at(c: ContainerRecord) -> str:
    return f" ({c.where})" if c.where else ""


def _containers(a: BuildManifest, b: BuildManifest) -> list[Change]:
    out = []
    for slot in sorted(set(a.containers) | set(b.containers)):
        ca, cb = a.containers.get(slot), b.containers.get(slot)
        if ca is None and cb is not None:
            caps = " ".join(cb.capabilities.get("effective", [])) or "none"
            out.append(Change("containers", slot, "added",
                              f"+ {slot} added: image {cb.image}, command {_cmd(cb.command)}, capabilities {caps}{_at(cb)}",
                              slot=slot, where=cb.where, privilege=bool(cb.capabilities.get("effective"))))
            continue
        if cb is None and ca is not None:
            out.append(Change("containers", slot, "removed", f"- {slot} removed{_at(ca)}", slot=slot, where=ca.where))
            continue
        assert ca is not None and cb is not None
        found = False
        parts, gained = _caps_text(cb.name, ca.capabilities, cb.capabilities)
        if parts:
            found = True
            out.append(Change("containers", f"{slot} capabilities", "changed", "; ".join(parts) + _at(cb), slot=slot,
                              where=cb.where, privilege=gained, before=ca.capabilities, after=cb.capabilities))
        for fld, before, after, worse in _field_changes(ca, cb):
            found = True
            out.append(Change("containers", f"{slot} {fld}", "changed", f"{cb.name} {fld}: {before} -> {after}{_at(cb)}",
                              slot=slot, where=cb.where, privilege=worse, before=before, after=after))
        if not found and (ca.config_sha256 != cb.config_sha256 or ca.runtime_sha256 != cb.runtime_sha256):
            which = [n for n, x, y in (("config.json", ca.config_sha256, cb.config_sha256),
                                       ("runtime.json", ca.runtime_sha256, cb.runtime_sha256)) if x != y]
            out.append(Change("containers", f"{slot} bundle", "changed", f"{cb.name}: {' and '.join(which)} changed{_at(cb)}",
                              slot=slot, where=cb.where))
    return out


def _cmd(args: list[str]) -> str:
    return " ".join(args) if args else "(image default)"


def _field_changes(ca: ContainerRecord, cb: ContainerRecord) -> list[tuple[str, str, str, bool]]:
    """(field, before, after, privilege gained?) for each field of the bundle that differs."""
    out = []
    if ca.mounts != cb.mounts:
        added = [m for m in cb.mounts if m not in ca.mounts]
        removed = [m for m in ca.mounts if m not in cb.mounts]
        out.append(("mounts", "; ".join(f"-{m}" for m in removed) or "-", "; ".join(f"+{m}" for m in added) or "-",
                    bool(added)))
    if ca.namespaces != cb.namespaces:
        lost = sorted(set(ca.namespaces) - set(cb.namespaces))   # a namespace less: shares the host's
        out.append(("namespaces", " ".join(ca.namespaces) or "none", " ".join(cb.namespaces) or "none", bool(lost)))
    if ca.oom_score_adj != cb.oom_score_adj:
        out.append(("oomScoreAdj", str(ca.oom_score_adj), str(cb.oom_score_adj), False))
    if ca.readonly != cb.readonly:
        out.append(("readonly", str(ca.readonly).lower(), str(cb.readonly).lower(), ca.readonly and not cb.readonly))
    if ca.command != cb.command:
        out.append(("command", _cmd(ca.command), _cmd(cb.command), False))
    if ca.env != cb.env:
        added = [e for e in cb.env if e not in ca.env]
        removed = [e for e in ca.env if e not in cb.env]
        out.append(("env", " ".join(removed) or "-", " ".join(added) or "-", False))
    if ca.user != cb.user:
        out.append(("user", ca.user, cb.user, cb.user.startswith("0:") and not ca.user.startswith("0:")))
    if ca.cwd != cb.cwd:
        out.append(("cwd", ca.cwd, cb.cwd, False))
    return out   # a changed image is told by the images and packages groups


def display_path(path: str) -> str:
    """/usr/bin/containerd, or nginx:/usr/sbin/nginx for a file in a container's root."""
    parts = path.split("/")
    if len(parts) > 3 and parts[0] == "containers" and parts[1] in ("services", "onboot", "onshutdown"):
        name = parts[2].split("-", 1)[1] if parts[1] != "services" and "-" in parts[2] else parts[2]
        if parts[3] in ("rootfs", "lower"):   # lower/: a writable container's image, under its overlay
            return f"{name}:/" + "/".join(parts[4:])
    return "/" + path


def _files(a: BuildManifest, b: BuildManifest) -> list[Change]:
    out = []
    fa, fb = a.files, b.files
    for path in fa.keys() | fb.keys():
        ra, rb = fa.get(path), fb.get(path)
        if ra == rb or (ra is not None and rb is not None and ra[:8] == rb[:8]):
            continue  # equal, or only the origin's numbering moved
        if ra is None and rb is not None:
            slot = b.origins[rb.origin].slot
            ref = _ref_change(a, b, slot)
            out.append(Change("files", path, "added", f"+ {display_path(path)} {_signed_bytes(rb.size)}"
                              + (f" ({ref})" if ref else ""), delta=rb.size, slot=slot, after=rb.size))
        elif rb is None and ra is not None:
            slot = a.origins[ra.origin].slot
            ref = _ref_change(a, b, slot)
            out.append(Change("files", path, "removed", f"- {display_path(path)} {_signed_bytes(-ra.size)}"
                              + (f" ({ref})" if ref else ""), delta=-ra.size, slot=slot, before=ra.size))
        elif ra is not None and rb is not None:
            slot = b.origins[rb.origin].slot
            ref = _ref_change(a, b, slot)
            what = _record_change(ra, rb)
            out.append(Change("files", path, "changed", f"~ {display_path(path)} {what}" + (f" ({ref})" if ref else ""),
                              delta=rb.size - ra.size, slot=slot, before=ra.size, after=rb.size))
    return out


def _record_change(ra: FileRecord, rb: FileRecord) -> str:
    parts = []
    if ra.type != rb.type:
        parts.append(f"type {ra.type} -> {rb.type}")
    if ra.size != rb.size:
        parts.append(f"{_signed_bytes(rb.size - ra.size)} ({human_bytes(ra.size)} -> {human_bytes(rb.size)})")
    elif ra.sha256 != rb.sha256:
        parts.append("content")
    if ra.mode != rb.mode:
        parts.append(f"mode {ra.mode:04o} -> {rb.mode:04o}")
    if (ra.uid, ra.gid) != (rb.uid, rb.gid):
        parts.append(f"owner {ra.uid}:{ra.gid} -> {rb.uid}:{rb.gid}")
    if ra.link != rb.link:
        parts.append(f"-> {rb.link} (was {ra.link})")
    return ", ".join(parts) or "changed"


def _outputs(a: BuildManifest, b: BuildManifest) -> list[Change]:
    out = []
    for fmt in sorted(set(a.formats) & set(b.formats)):
        arts_a = {x.role: x for x in a.formats[fmt]}
        for art in b.formats[fmt]:
            old = arts_a.get(art.role)
            if old is None or old.sha256 == art.sha256:
                continue
            delta = art.size - old.size
            out.append(Change("outputs", f"{fmt} {art.role}", "changed",
                              f"{fmt}: {art.name} {human_bytes(old.size)} -> {human_bytes(art.size)} ({_signed_bytes(delta)})",
                              delta=delta, format=fmt, before=old.size, after=art.size))
    return out


# ---- boot phases -------------------------------------------------------------------------------------


def phases(figures: Mapping[str, float]) -> list[tuple[str, float]]:
    """(boot figure, seconds since the previous marker) in boot order, from cumulative boot.* figures."""
    points = sorted((v, k) for k, v in figures.items() if k.startswith("boot.") and not k.startswith("boot.onshutdown")
                    and k != "boot.poweroff")
    out, last = [], 0.0
    for value, name in points:
        out.append((name, value - last))
        last = value
    return out


def boot_changes(fmt: str, before: Mapping[str, float], after: Mapping[str, float],
                 spread: Mapping[str, float] | None = None, min_seconds: float = BOOT_MIN_SECONDS) -> list[Change]:
    """Boot phases slower or faster, by the time each phase took (not the time it ended at).

    `spread` is the baseline's MAD per figure: a change within 3 sigma of it (or `min_seconds`) is noise.
    """
    pa, pb = dict(phases(before)), dict(phases(after))
    out = []
    for name in sorted(set(pa) | set(pb)):
        da, db = pa.get(name), pb.get(name)
        mad = (spread or {}).get(name, 0.0)
        margin = max(min_seconds, 3 * MAD_TO_SIGMA * mad)
        noise = f", baseline spread ±{MAD_TO_SIGMA * mad:.1f} s" if mad else ""
        if da is None and db is not None:
            if db >= min_seconds:
                out.append(Change("boot", name, "added", f"{name} new: {db:.1f} s", delta=db, format=fmt, after=db))
        elif db is None and da is not None:
            out.append(Change("boot", name, "removed", f"{name} gone (took {da:.1f} s)", delta=-da, format=fmt, before=da))
        elif da is not None and db is not None and abs(db - da) > margin:
            out.append(Change("boot", name, "changed",
                              f"{name} {_signed_seconds(db - da)} ({da:.1f} s -> {db:.1f} s{noise})",
                              delta=db - da, format=fmt, before=da, after=db))
    return out


# ---- explanations of the gate's findings -------------------------------------------------------------


def explain_figure(d: BuildDiff, fmt: str, figure: str, n: int = 3) -> list[str]:
    """The top contributors to a changed figure of format `fmt` (size.* from the files, boot.* from the
    boot phases); [] when nothing in the diff explains it."""
    if figure.startswith("size."):
        return _explain_size(d, fmt, figure[5:], n)
    if figure.startswith("boot."):
        items = sorted(d.group("boot", fmt), key=lambda c: -c.delta)
        items = [c for c in items if c.delta > 0] or items
        lines = [c.text for c in items[:n]]
        lines += [c.text for c in d.top(n, ("containers", "kernel"))
                  if c.kind != "changed" or c.subject in ("cmdline", "version")][: max(0, n - len(lines))]
        return lines
    return [c.text for c in d.top(n)]


def _explain_size(d: BuildDiff, fmt: str, artifact: str, n: int) -> list[str]:
    role = role_of(artifact) if artifact != "total" else "image"
    lines = []
    out = next((c for c in d.group("outputs", fmt) if c.subject == f"{fmt} {role}"), None)
    if role == "kernel":
        return [c.text for c in d.group("kernel")][:n]
    if role == "cmdline":
        return [c.text for c in d.group("kernel") if c.subject == "cmdline"]
    files = d.group("files")
    if role == "initrd":
        files = [c for c in files if not c.subject.startswith("boot/")]
    elif role == "modules":
        files = [c for c in files if c.subject.startswith("lib/modules/")]
    grow = out is None or out.delta >= 0
    ranked = sorted((c for c in files if c.delta), key=lambda c: (-c.delta if grow else c.delta, c.subject))
    if ranked:
        total = sum(c.delta for c in files)
        top = ", ".join(_short(c) for c in ranked[:n])
        lines.append(f"{artifact} files {_signed_bytes(total)} uncompressed: {top}")
        by_slot: dict[str, float] = {}
        for c in files:
            by_slot[c.slot] = by_slot.get(c.slot, 0) + c.delta
        slots = sorted(((s, v) for s, v in by_slot.items() if v), key=lambda kv: -kv[1] if grow else kv[1])[:n]
        lines.append("by image: " + ", ".join(f"{s} {_signed_bytes(v)}" for s, v in slots))
        slot_set = {s for s, _ in slots}
        packages = [c.text.lstrip("~+- ") for c in d.group("packages") if c.slot in slot_set]
        if packages:
            lines.append("packages: " + ", ".join(packages[:n]) + (" ..." if len(packages) > n else ""))
    if role in ("image",) and d.group("kernel"):
        lines.append("kernel: " + "; ".join(c.text for c in d.group("kernel")[:n]))
    return lines


def _short(c: Change) -> str:
    ref = c.text.rsplit(" (", 1)[1][:-1] if c.text.endswith(")") and " (" in c.text else ""
    what = "added" if c.kind == "added" else "removed" if c.kind == "removed" else ""
    extra = ", ".join(x for x in (what, ref) if x)
    return f"{display_path(c.subject)} {_signed_bytes(c.delta)}" + (f" ({extra})" if extra else "")


CHECK_GROUPS: dict[str, tuple[str, ...]] = {
    "capabilities": ("containers",),
    "services_running": ("containers", "images", "packages"),
    "onboot": ("containers", "images", "packages"),
    "ports": ("containers", "images", "packages"),
    "files": ("files",),
    "boots": ("kernel", "containers", "boot"),
    "boot_time": ("boot", "kernel", "containers"),
    "shutdown": ("containers", "kernel"),
    "build": ("outputs",),
    "size_budget": ("files", "outputs"),
}


def explain_check(d: BuildDiff, check: str, fmt: str | None = None, n: int = 3) -> list[str]:
    """What changed that can make check `check` fail, most likely first."""
    groups = CHECK_GROUPS.get(check, GROUPS)
    items = d.top(n * 4, groups, fmt)
    if check == "capabilities":
        items = [c for c in items if c.subject.endswith("capabilities") or c.kind != "changed"] or items
    elif check == "files":
        items = [c for c in items if c.slot == "files"] or items
    if check in ("boot_time", "boots"):
        boot = sorted((c for c in items if c.group == "boot"), key=lambda c: -c.delta)
        items = boot + [c for c in items if c.group != "boot"]
    return [c.text for c in items[:n]]


def privilege_gains(d: BuildDiff) -> list[Change]:
    """Containers that gained a capability (or another privilege) since the baseline."""
    return [c for c in d.changes if c.group == "containers" and c.privilege]
