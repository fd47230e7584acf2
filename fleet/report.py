"""What `unified releases`, `unified status` and `unified lock status` show: data for
`--json`, and the same as text for people. Reads only."""

from __future__ import annotations

import time
from typing import Any

from agent.config.catalog import Catalog
from fleet import groups, history, inventory, lock, preflight, routing


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) if epoch else "-"


def format_releases(env: str, rows: list[dict[str, Any]]) -> str:
    """Like `heroku releases`: newest first, one line each."""
    if not rows:
        return f"=== {env}: no releases yet"
    lines = [f"=== {env} releases"]
    for r in rows:
        commits = " ".join(f"{repo}@{sha[:8]}" for repo, sha in sorted((r.get("commits") or {}).items()))
        phases = ", ".join(f"{k} {v:.1f}s" for k, v in (r.get("phases") or {}).items())
        detail = f"  ({r['detail']})" if r.get("detail") else ""
        lines.append(f"{r['deploy_id']}  {r['service']:<16} {r['kind']:<8} {r['image']:<22} {r['result']:<11} "
                     f"{r['who']}  {_when(r.get('started'))} UTC  {commits}" + (f"  [{phases}]" if phases else "")
                     + detail)
    return "\n".join(lines)


def status(catalog: Catalog, parts: preflight.Parts, env: str) -> dict[str, Any]:
    all_groups = inventory.all_groups(env)
    releases_ = history.releases(parts.table, env)
    locks = lock.holders(parts.table, env)
    services = {}
    for name, part in parts.services.items():
        registered = {tg: routing.registered(arn) for tg, arn in part.target_groups.items()} if part.pair else {}
        state = inventory.read(env, part, all_groups, releases_, registered)
        by_arn = {arn: tg for tg, arn in part.target_groups.items()}
        weights = {by_arn.get(arn, arn): w for arn, w in (part.routes[0].weights.items() if part.routes else [])}
        services[name] = {
            "live": _group(state.live, state, part),
            "standby": _group(state.standby, state, part) | {"ends": groups.standby_ends(state.standby.name)}
            if state.standby else None,
            "kept": [_group(g, state, part) for g in state.kept],
            "leftovers": [g.name for g in state.leftovers],
            "weights": weights,
            "lock": locks[name].to_json() if name in locks else None,
        }
    return {"env": env, "services": services}


def _group(group: groups.Group | None, state: inventory.ServiceState, part: preflight.ServiceParts) -> dict[str, Any]:
    if group is None:
        return {}
    record = state.release_of(group)
    health = {}
    if group.target_group and group.target_group in part.target_groups and group.in_service:
        ids = [i.instance_id for i in group.in_service]
        health = {i: s for i, (s, _) in routing.target_health(part.target_groups[group.target_group], ids).items()}
    elif len(part.target_groups) == 1 and group.in_service:
        (tg, arn), = part.target_groups.items()
        health = {i: s for i, (s, _) in routing.target_health(arn, [i.instance_id for i in group.in_service]).items()}
    return {"group": group.name, "deploy_id": group.deploy_id, "image": record.image if record else "?",
            "commits": record.commits if record else {}, "min": group.min, "desired": group.desired, "max": group.max,
            "in_service": len(group.in_service), "target_group": group.target_group, "health": health}


def format_status(report: dict[str, Any]) -> str:
    lines = [f"=== {report['env']}"]
    for name, svc in report["services"].items():
        lines.append(f"{name}:")
        for label in ("live", "standby"):
            g = svc.get(label)
            if not g:
                lines.append(f"  {label:<8} -")
                continue
            weight = f", weight {svc['weights'].get(g['target_group'], '-')}" if g.get("target_group") else ""
            healthy = sum(1 for s in g["health"].values() if s == "healthy")
            commits = " ".join(f"{repo}@{sha[:8]}" for repo, sha in sorted(g["commits"].items()))
            ends = f", to zero at {_when(g['ends'])} UTC" if g.get("ends") else ""
            lines.append(f"  {label:<8} {g['deploy_id']}  {g['image']}  {commits}  {g['in_service']}/{g['desired']} "
                         f"in service (min {g['min']}, max {g['max']}), {healthy} healthy"
                         + (f" in {g['target_group']}{weight}" if g.get("target_group") else "") + ends)
        kept = ", ".join(f"{g['deploy_id']} ({g['image']})" for g in svc["kept"]) or "-"
        lines.append(f"  kept     {kept}")
        if svc["leftovers"]:
            lines.append(f"  left over by a stopped deploy (the next deploy removes them): {', '.join(svc['leftovers'])}")
        lock_ = svc.get("lock")
        lines.append(f"  lock     " + (f"held by {lock_['holder']} since {_when(lock_['since'])} UTC "
                                       f"(deploy {lock_['deploy_id']}, {lock_['phase']})" if lock_ else "free"))
    return "\n".join(lines)


def format_locks(env: str, report: dict[str, Any]) -> str:
    lines = []
    for name, holder in report.items():
        if holder is None:
            lines.append(f"{name}: free")
        else:
            lines.append(f"{name}: held by {holder['holder']} since {_when(holder['since'])} UTC for "
                         f"`{holder['command']}` (deploy {holder['deploy_id']}, phase {holder['phase']}, "
                         f"lease until {_when(holder['expires'])} UTC)")
    return "\n".join(lines) or f"{env}: no service to lock"
