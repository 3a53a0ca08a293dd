"""The table and the targets of bench/peers, from its results dictionary.

    python3 bench/report.py bench/results/peers.json              # print peers.md's text
    python3 bench/report.py bench/results/peers.json docs/benchmarks.md   # refresh the copy in docs/benchmarks.md

The copy in docs/benchmarks.md sits between the two BEGIN/END marker comments below.
"""

import json
import sys

# Row order and names of the table.
ROWS = [
    ("floor", "busybox floor (hand-made)"),
    ("genboot", "genboot"),
    ("itools-list", "initramfs-tools MODULES=list"),
    ("itools-most", "initramfs-tools MODULES=most"),
    ("dracut-minimal", "dracut minimal (`--no-hostonly -m … --drivers …`)"),
    ("dracut-default", "dracut (default)"),
]
PEERS = ["itools-list", "itools-most", "dracut-minimal", "dracut-default"]
MIB = 1024 * 1024


def _f(x, unit="", nd=2):
    return "–" if x is None else f"{x:.{nd}f}{unit}"


def booted(res, name):
    b = res["boots"].get(name)
    return bool(b and b["ok"])


def targets(res):
    """Each target: met (True/False/None when it could not be measured),
    the figures and the ratio."""
    b, s, bo = res["builds"], res["initrds"], res["boots"]
    t = []

    def add(name, met, detail):
        t.append({"target": name, "met": met, "detail": detail})

    peers_ok = [p for p in PEERS if booted(res, p) and p in b]
    step = b.get("genboot-initrd-step") or b.get("genboot-build-cold")
    step_name = "initrd step" if "genboot-initrd-step" in b else "whole cold build"
    if step and peers_ok:
        fastest = min(peers_ok, key=lambda p: b[p]["wall_s_median"])
        ratio = b[fastest]["wall_s_median"] / step["wall_s_median"]
        add("genboot's initrd step ≥ 10× faster than the fastest peer that boots", ratio >= 10,
            f"genboot {step_name} {step['wall_s_median']:.3f} s vs {fastest} "
            f"{b[fastest]['wall_s_median']:.3f} s: {ratio:.1f}×")
    else:
        add("genboot's initrd step ≥ 10× faster than the fastest peer that boots", None,
            "not measured")
    w = b.get("genboot-build-warm")
    add("warm `genboot build` < 100 ms", None if not w else w["wall_s_median"] < 0.1,
        "not measured" if not w else f"{w['wall_s_median'] * 1000:.0f} ms")
    sizes_ok = [p for p in PEERS if booted(res, p) and p in s]
    g = s.get("genboot")
    if g and sizes_ok:
        smallest = min(sizes_ok, key=lambda p: s[p]["bytes"])
        ratio = s[smallest]["bytes"] / g["bytes"]
        add("genboot's initrd ≥ 5× smaller than the smallest peer initrd that boots",
            ratio >= 5, f"genboot {g['bytes'] / MIB:.2f} MiB vs {smallest} "
            f"{s[smallest]['bytes'] / MIB:.2f} MiB: {ratio:.1f}×")
    else:
        add("genboot's initrd ≥ 5× smaller than the smallest peer initrd that boots", None,
            "not measured")
    fl = s.get("floor")
    if g and fl:
        add("genboot's initrd no larger than the busybox floor", g["bytes"] <= fl["bytes"],
            f"genboot {g['bytes']:,} B vs floor {fl['bytes']:,} B "
            f"({g['bytes'] / fl['bytes']:.2f}×)")
    else:
        add("genboot's initrd no larger than the busybox floor", None, "not measured")
    gb, fb = bo.get("genboot"), bo.get("floor")
    if gb and fb and gb["ok"] and fb["ok"]:
        add("uptime at the real init no later than the busybox floor",
            gb["real_init_s_median"] <= fb["real_init_s_median"],
            f"genboot {gb['real_init_s_median']:.3f} s vs floor "
            f"{fb['real_init_s_median']:.3f} s "
            f"({gb['real_init_s_median'] - fb['real_init_s_median']:+.3f} s)")
    else:
        add("uptime at the real init no later than the busybox floor", None, "not measured")
    name = "initrd phase ≤ 0.7× the busybox floor's"
    if gb and fb and gb["ok"] and fb["ok"]:
        ratio = gb["initrd_phase_s_median"] / fb["initrd_phase_s_median"]
        add(name, ratio <= 0.7,
            f"genboot {gb['initrd_phase_s_median']:.3f} s vs floor "
            f"{fb['initrd_phase_s_median']:.3f} s: {ratio:.2f}×")
    else:
        add(name, None, "not measured")
    for family, members, factor in [("initramfs-tools (its fastest variant)",
                                     ["itools-list", "itools-most"], 3),
                                    ("dracut minimal", ["dracut-minimal"], 10)]:
        name = f"initrd phase ≥ {factor}× shorter than {family}"
        ok = [m for m in members if booted(res, m)]
        if gb and gb["ok"] and ok:
            fastest = min(ok, key=lambda m: bo[m]["initrd_phase_s_median"])
            ratio = bo[fastest]["initrd_phase_s_median"] / gb["initrd_phase_s_median"]
            add(name, ratio >= factor,
                f"genboot {gb['initrd_phase_s_median']:.3f} s vs {fastest} "
                f"{bo[fastest]['initrd_phase_s_median']:.3f} s: {ratio:.1f}×")
        else:
            add(name, None, "not measured")
    name = ("Debian root: multi-user.target earlier with genboot than with initramfs-tools "
            "by at least the difference in initrd phases")
    d = res.get("debian", {}).get("boots", {})
    g, i = d.get("genboot"), d.get("itools")
    if g and i and g["ok"] and i["ok"]:
        d_mu = i["multi_user_s_median"] - g["multi_user_s_median"]
        d_phase = i["initrd_phase_s_median"] - g["initrd_phase_s_median"]
        add(name, d_mu >= d_phase,
            f"multi-user.target {g['multi_user_s_median']:.2f} s vs "
            f"{i['multi_user_s_median']:.2f} s ({d_mu:+.2f} s earlier); initrd phase "
            f"{g['initrd_phase_s_median']:.3f} s vs {i['initrd_phase_s_median']:.3f} s "
            f"({d_phase:+.3f} s)")
    else:
        add(name, None, "not measured")
    return t


def timings_of(boot):
    """genboot-init's timings.json of every run of a boot that has one."""
    runs = [r.get("genboot_timings") for r in (boot or {}).get("runs", [])]
    return [r for r in runs if r and r.get("steps")]


def module_loads(runs, title):
    """When each module's load started and ended (ms after the first load
    started; medians over the runs), from timings.json's `modules`."""
    runs = [r for r in runs if r.get("modules")]
    if not runs:
        return []
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None  # noqa: E731
    names = [m["module"] for m in runs[0]["modules"]]
    start, end, failed = {n: [] for n in names}, {n: [] for n in names}, set()
    for r in runs:
        t0 = min(m["start_us"] for m in r["modules"])
        for m in r["modules"]:
            if m["module"] in start:
                start[m["module"]].append((m["start_us"] - t0) / 1000)
                end[m["module"]].append((m["end_us"] - t0) / 1000)
                if not m.get("loaded"):
                    failed.add(m["module"])
    out = ["", title, "", "| module (manifest order) | started | ended | took |",
           "|---|---:|---:|---:|"]
    for n in names:
        took = med([e - b for b, e in zip(start[n], end[n])])
        out.append(f"| {n}{' (failed)' if n in failed else ''} | {_f(med(start[n]), ' ms', 0)} "
                   f"| {_f(med(end[n]), ' ms', 0)} | {_f(took, ' ms', 0)} |")
    return out


def genboot_steps(res, boot=None, title=None):
    """genboot-init's own per-step timings (CLOCK_BOOTTIME, from
    /run/genboot/timings.json), medians over the runs."""
    runs = timings_of(boot if boot is not None else res["boots"].get("genboot"))
    if not runs:
        return []
    names = [s["step"] for s in runs[0]["steps"]]
    at, took = {}, {}
    for n in names:
        at[n], took[n] = [], []
    for r in runs:
        prev = None
        for s in r["steps"]:
            if s["step"] in at:
                at[s["step"]].append(s["us"] / 1e6)
                if prev is not None:
                    took[s["step"]].append((s["us"] - prev) / 1e6)
            prev = s["us"]
    med = lambda xs: sorted(xs)[len(xs) // 2] if xs else None  # noqa: E731
    out = ["", title or ("genboot-init's steps in the genboot boots (its own timings, "
                         "`/run/genboot/timings.json`, CLOCK_BOOTTIME; medians): each step "
                         "ends at *done at*; *took* is the time since the previous step "
                         "ended."), "",
           "| step | done at | took |", "|---|---:|---:|"]
    for n in names:
        out.append(f"| {n} | {_f(med(at[n]), ' s', 3)} | {_f(med(took[n]), ' s', 3)} |")
    return out


def markdown(res):
    b, s, bo = res["builds"], res["initrds"], res["boots"]
    lines = [
        f"Measured {res['date']} on {res['host']['cpus']} cores ({res['host']['cpu']}), "
        f"load average before the run {' / '.join(res['host']['load_before'])} "
        f"(1/5/15 min), after {' / '.join(res.get('load_after', ['?'] * 3))}; kernel "
        f"{res['kernel']['package']}; medians of {res['runs']} builds and "
        f"{res.get('boot_runs', res['runs'])} boots after a warm-up of each; genboot "
        f"{res.get('genboot_commit', '?')}, "
        + ", ".join(f"{k} {v}" for k, v in res.get("peer_versions", {}).items()) + ".",
        "",
        "| initrd | build | peak RSS | size | modules | /init at | real init at | initrd phase "
        "| QEMU wall |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for key, label in ROWS:
        if key not in s and key not in b:
            continue
        bb = b.get(key)
        if key == "genboot":
            bb = b.get("genboot-initrd-step")
        ss = s.get(key)
        boot = bo.get(key)
        ok = bool(boot and boot["ok"])
        failed = bool(boot) and not ok
        if not ok:
            boot = None
        lines.append("| " + " | ".join([
            label + (" **(did not boot)**" if failed else ""),
            _f(bb and bb["wall_s_median"], " s", 3),
            _f(bb and bb["max_rss_kib_median"] / 1024, " MiB", 1),
            _f(ss and ss["bytes"] / MIB, " MiB", 2),
            str(ss["modules"]) if ss else "–",
            _f(boot and boot["init_s_median"], " s", 3),
            _f(boot and boot["real_init_s_median"], " s", 3),
            _f(boot and boot["initrd_phase_s_median"], " s", 3),
            _f(boot and boot["qemu_wall_s_median"], " s", 2),
        ]) + " |")
    for key, label in [("genboot-build-cold", "whole `genboot build`, cold store"),
                       ("genboot-build-warm", "whole `genboot build`, warm store"),
                       ("depmod", "`depmod` (the peers need it first; not in their build)")]:
        if key in b:
            lines.append(f"| {label} | {_f(b[key]['wall_s_median'], ' s', 3)} | "
                         f"{_f(b[key]['max_rss_kib_median'] / 1024, ' MiB', 1)} "
                         "| | | | | | |")
    lines += ["", "| target | met | measured |", "|---|---|---|"]
    for t in res.get("targets") or targets(res):
        met = {True: "met", False: "**missed**", None: "not measured"}[t["met"]]
        lines.append(f"| {t['target']} | {met} | {t['detail']} |")
    lines += genboot_steps(res)
    lines += module_loads(timings_of(bo.get("genboot")),
                          "genboot-init's module loads in those boots (`modules` in "
                          "timings.json; medians, ms after the first load started):")
    for smp, boots in sorted(res.get("boots_smp", {}).items()):
        lines += smp_rows(res, smp, boots)
    lines += debian_rows(res)
    ph = b.get("genboot-initrd-step", {}).get("phases_s_median")
    if ph:
        lines += ["", "Where genboot's initrd step spends its time (`bench/initrd-step` times "
                  "its own phases; medians):", "", "| phase | time |", "|---|---:|"]
        lines += [f"| {k} | {v:.3f} s |" for k, v in ph.items()]
    prof = res.get("genboot_build_profile")
    if prof:
        lines += ["", "Where a cold `genboot build` spends its time (its own progress lines, "
                  "one run on a pseudo-terminal; seconds since it started):", "", "```"]
        lines += prof + ["```"]
    notes = res.get("notes")
    if notes:
        lines += [""] + notes
    return "\n".join(lines) + "\n"


def smp_rows(res, smp, boots):
    """The busybox-stage-2 boots again with `smp` virtual CPUs."""
    first = (res.get("smp") or [1])[0]
    out = ["", f"The same boots with `-smp {smp}` ({smp} virtual CPUs; the table above has "
           f"{first}), in the same run, interleaved with them:", "",
           "| initrd | /init at | real init at | initrd phase | QEMU wall |",
           "|---|---:|---:|---:|---:|"]
    for key, label in ROWS:
        b = boots.get(key)
        if not b:
            continue
        ok = b["ok"]
        val = lambda k: b[k] if ok else None  # noqa: E731
        out.append("| " + " | ".join([
            label + ("" if ok else " **(did not boot)**"),
            _f(val("init_s_median"), " s", 3),
            _f(val("real_init_s_median"), " s", 3),
            _f(val("initrd_phase_s_median"), " s", 3),
            _f(val("qemu_wall_s_median"), " s", 2)]) + " |")
    g, f = boots.get("genboot"), boots.get("floor")
    if g and f and g["ok"] and f["ok"]:
        out += ["", f"With {smp} CPUs genboot's initrd phase is "
                f"{g['initrd_phase_s_median'] / f['initrd_phase_s_median']:.2f}× the floor's."]
    out += genboot_steps(res, g, f"genboot-init's steps with {smp} CPUs (medians):")
    out += module_loads(timings_of(g), f"genboot-init's module loads with {smp} CPUs "
                        "(medians, ms after the first load started):")
    return out


def debian_rows(res):
    """The Debian 12 root with systemd: genboot-init against Debian's own
    initramfs-tools initrd."""
    d = res.get("debian")
    if not d:
        return []
    v = d.get("versions", {})
    out = ["", f"A stock Debian 12 root with systemd (`tools/debian-root --extra "
           f"initramfs-tools`: systemd {v.get('systemd', '?')}, initramfs-tools "
           f"{v.get('initramfs-tools', '?')}), its own kernel {d['kernel_release']}, one ext4 "
           f"disk, the same QEMU command (`{d.get('qemu', '?')}`); medians of "
           f"{len(next(iter(d['boots'].values()))['runs']) if d.get('boots') else 0} boots "
           "after a warm-up. *systemd at* is systemd's UserspaceTimestampMonotonic, "
           "*multi-user.target at* its ActiveEnterTimestampMonotonic (both from kernel "
           "start); the initrd phase is from the kernel's `Run /init` to systemd's start.", "",
           "| initrd | build | size | modules | /init at | systemd at | initrd phase "
           "| multi-user.target at | QEMU wall |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    labels = {"genboot": "genboot (initrd step)",
              "itools": "initramfs-tools (Debian's default, `mkinitramfs` in the root)"}
    for key, label in labels.items():
        b, bb, ss = d["boots"].get(key), d["builds"].get(key), d["initrds"].get(key)
        ok = bool(b and b["ok"])
        val = lambda k: b[k] if ok else None  # noqa: E731
        out.append("| " + " | ".join([
            label + ("" if ok or not b else " **(did not boot)**"),
            _f(bb["wall_s_median"] if bb else None, " s", 3),
            _f(ss["bytes"] / MIB if ss else None, " MiB", 2),
            str(ss["modules"]) if ss else "–",
            _f(val("init_s_median"), " s", 3),
            _f(val("systemd_s_median"), " s", 3),
            _f(val("initrd_phase_s_median"), " s", 3),
            _f(val("multi_user_s_median"), " s", 2),
            _f(val("qemu_wall_s_median"), " s", 1)]) + " |")
    states = {k: sorted({r.get("system") or "?" for r in b["runs"]})
              for k, b in d["boots"].items()}
    out += ["", "systemd's state at the end of each boot (`systemctl is-system-running`): "
            + "; ".join(f"{k}: {', '.join(s)}" for k, s in states.items()) + "."]
    out += genboot_steps(res, d["boots"].get("genboot"),
                         "genboot-init's steps on the Debian root (medians):")
    return out


BEGIN = "<!-- bench/peers results: generated by `python3 bench/report.py` -->"
END = "<!-- end of bench/peers results -->"


def refresh_readme(readme, md):
    text = open(readme).read()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    open(readme, "w").write(text[:start] + "\n" + md + text[end:])


if __name__ == "__main__":
    md = markdown(json.load(open(sys.argv[1])))
    if len(sys.argv) > 2:
        refresh_readme(sys.argv[2], md)
    else:
        print(md, end="")
