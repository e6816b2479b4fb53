"""The independent checker: the history file and the database, nothing else.

It imports none of Mita's services: the database is read with plain SQL (psycopg, one read-only snapshot), tokens
are decoded with :mod:`mita.sts` under decoder keys it derives itself from the vending key the test made, and each
meter's tokens are replayed through a fresh virtual meter (:mod:`mita.meter`). Each invariant has a stable name; a
report lists, per name, how many violations and a few examples.

| name | invariant |
|---|---|
| ``lost`` | every acknowledged vend is in the database, with the digits it was answered with, under its key |
| ``duplicated`` | at most one vend per (API key, idempotency key), per provider payment, per payment's vend |
| ``unresolved`` | every unknown outcome (``info``) was followed by a definite answer for its key |
| ``phantom`` | every vend has a request: its idempotency row names a key the history sent (or a payment) |
| ``tid`` | (meter, base date, TID) unique, and TIDs strictly increasing per meter in issue order |
| ``decode`` | every stored token decodes under its meter's key to its row: class, subclass, TID, units |
| ``meter_replay`` | a virtual meter fed each meter's tokens in TID order accepts all; its credit is the sold credit |
| ``ledger`` | each vend's lines balance; per account: vendors' debits are their sales, customers' debt, carried |
| ``audit`` | one ``vend`` entry per vend and none for a vend that is not there; the append-only trigger in place |
| ``outbox`` | one receipt row per vend, dedupe keys unique, every row sent once drained; commands final |
| ``delivered`` | every connected meter's own credit register holds its sold credit: each token applied once |
| ``payments`` | every payment final; every paid provider transaction exactly one payment and one vend |
| ``recovery`` | after every fault an operation was acknowledged again within the limit |
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from mita import sts
from mita.meter import Meter
from mita.meter.model import ACCEPTED, PER_BASE_UNIT

from .history import read

INVARIANTS = ("lost", "duplicated", "unresolved", "phantom", "tid", "decode", "meter_replay", "ledger", "audit",
              "outbox", "delivered", "payments", "recovery")  # fmt: skip
FINAL_PAYMENTS = frozenset({"delivered", "refunded", "cancelled", "failed", "expired", "flagged"})
EXAMPLES = 5


@dataclass
class Report:
    figures: dict[str, Any] = field(default_factory=dict)
    violations: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INVARIANTS, 0))
    examples: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def bad(self, name: str, example: str) -> None:
        assert name in INVARIANTS, name
        self.violations[name] += 1
        if len(self.examples[name]) < EXAMPLES:
            self.examples[name].append(example)

    @property
    def failed(self) -> list[str]:
        return [name for name, n in self.violations.items() if n]

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        f = self.figures
        parts = [f"ops={f.get('ops', 0)} ok={f.get('ok', 0)} fail={f.get('fail', 0)} info={f.get('info', 0)}",
                 f"acked_vends={f.get('acknowledged', 0)} in_doubt={f.get('in_doubt_keys', 0)} "
                 f"(committed {f.get('in_doubt_committed', 0)})",
                 " ".join(f"{n}={v}" for n, v in self.violations.items()),
                 f"faults={f.get('faults', {})} recovery_p50={f.get('recovery_p50_s')}s "
                 f"max={f.get('recovery_max_s')}s"]  # fmt: skip
        return " | ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "failed": self.failed, "violations": self.violations, "examples": dict(self.examples),
                "figures": self.figures}  # fmt: skip


# ---------------------------------------------------------------------- the history


@dataclass
class Key:
    """What the history says of one (API key, idempotency key)."""

    owner: str
    key: str
    bodies: set[str] = field(default_factory=set)
    vend_ids: set[str] = field(default_factory=set)
    answers: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[str] = field(default_factory=list)  # per attempt, in completion order


@dataclass
class Story:
    setup: dict[str, Any]
    keys: dict[tuple[str, str], Key]
    payments: list[dict[str, Any]]  # ok answers of f="pay": the provider's transactions that were paid
    faults: list[dict[str, Any]]
    ok_times: list[float]
    counts: Counter[str]


def load_history(path: Path) -> Story:
    setup: dict[str, Any] = {}
    invokes: dict[int, dict[str, Any]] = {}
    keys: dict[tuple[str, str], Key] = {}
    payments: list[dict[str, Any]] = []
    faults: list[dict[str, Any]] = []
    ok_times: list[float] = []
    counts: Counter[str] = Counter()
    for r in read(path):
        kind = r["type"]
        if kind == "setup":
            setup.update(r)
        elif kind == "invoke":
            invokes[r["op"]] = r
            counts["ops"] += 1
        elif kind in ("ok", "fail", "info"):
            counts[kind] += 1
            inv = invokes.get(r["op"])
            if inv is None:
                continue
            if kind == "ok":
                ok_times.append(r["t"])
            if inv["f"] == "pay":
                if kind == "ok":
                    payments.append({**(inv.get("body") or {}), **(r.get("value") or {})})
                continue
            body = dict(inv.get("body") or {})
            owner = str(body.pop("api_key", ""))
            k = keys.setdefault((owner, inv["key"]), Key(owner, inv["key"]))
            k.bodies.add(json.dumps(body, sort_keys=True))
            k.outcomes.append(kind)
            if kind == "ok" and r.get("value"):
                k.answers.append(r["value"])
                if r["value"].get("vend_id"):
                    k.vend_ids.add(r["value"]["vend_id"])
        elif kind == "fault" and (r.get("detail") or {}).get("phase") == "strike":
            faults.append(r)
    return Story(setup, keys, payments, faults, ok_times, counts)


# ---------------------------------------------------------------------- the database


SNAPSHOT = {
    "vends": "SELECT id, vendor_id, api_key_id, meter_id, customer_id, kind, amount, units, status FROM vends",
    "idempotency": "SELECT api_key_id, key, status_code, vend_id FROM idempotency",
    "tokens": "SELECT id, vend_id, meter_id, seq, kind, tid, base_date, token_class, subclass, digits, units "
    "FROM tokens ORDER BY id",
    "meters": "SELECT m.id, m.drn, m.iin, m.ti, m.kt, m.krn, m.ea, m.ken, m.base_date, m.pending_key, "
    "g.sgc, k.dkga FROM meters m JOIN supply_groups g ON g.id = m.supply_group_id "
    "LEFT JOIN vending_keys k ON k.supply_group_id = g.id AND k.krn = m.krn",
    "ledger": "SELECT vend_id, account, debit, credit FROM ledger",
    "customers": "SELECT id, debt, carried, refund_balance FROM customers",
    "audit": "SELECT id, entity_id FROM audit WHERE action = 'vend' AND entity = 'vend'",
    "outbox": "SELECT id, vend_id, channel, dedupe_key, status, attempts FROM outbox",
    "commands": "SELECT id, meter_id, vend_id, status, error FROM meter_commands",
    "payments": "SELECT id, provider, provider_ref, receipt, status, vend_id, amount FROM payments",
    "api_keys": "SELECT id, name FROM api_keys",
    "triggers": "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit'::regclass AND NOT tgisinternal",
    "endpoints": "SELECT meter_id, transport FROM meter_endpoints",
}


def snapshot(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every table the invariants read, in one read-only REPEATABLE READ transaction (one consistent view)."""
    url = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url, row_factory=dict_row, connect_timeout=10) as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return {name: list(conn.execute(sql)) for name, sql in SNAPSHOT.items()}  # type: ignore[arg-type,unused-ignore]


# ---------------------------------------------------------------------- the checks


@dataclass
class Checker:
    story: Story
    db: dict[str, list[dict[str, Any]]]
    vending_key: bytes
    drained: bool = False  # the outbox was given time to empty: every row must be sent
    meter_files: dict[str, Path] = field(default_factory=dict)  # connected meters' own files (drn -> path)
    recovery_limit_s: float = 30.0
    report: Report = field(default_factory=Report)

    def run(self) -> Report:
        self.vends = {v["id"]: v for v in self.db["vends"]}
        self.meters = {m["id"]: m for m in self.db["meters"]}
        self.key_names = {int(k["id"]): str(k["name"]) for k in self.db["api_keys"]}
        self.tokens_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for t in self.db["tokens"]:
            self.tokens_of[t["vend_id"]].append(t)
        for check in (self.acknowledged, self.duplicates, self.resolution, self.phantoms, self.tids, self.decoding,
                      self.ledger, self.audit, self.outbox, self.delivered, self.payments, self.recovery):  # fmt: skip
            check()
        c = self.story.counts
        self.report.figures.update(ops=c["ops"], ok=c["ok"], fail=c["fail"], info=c["info"],
                                   vends_in_db=len(self.vends), tokens_in_db=len(self.db["tokens"]))  # fmt: skip
        return self.report

    # -------------------------------------------------- I1 lost, I2 duplicated, I3 unresolved, I4 phantom

    def acknowledged(self) -> None:
        acked = 0
        idem = defaultdict(list)
        for row in self.db["idempotency"]:
            idem[(self.key_names.get(int(row["api_key_id"]), "?"), row["key"])].append(row)
        for (owner, key), k in self.story.keys.items():
            for vend_id in k.vend_ids:
                acked += 1
                vend = self.vends.get(vend_id)
                if vend is None:
                    self.report.bad("lost", f"{owner}/{key}: vend {vend_id} was answered and is not in the database")
                    continue
                answer = next(a for a in k.answers if a.get("vend_id") == vend_id)
                stored = [t["digits"] for t in sorted(self.tokens_of[vend_id], key=lambda t: t["seq"])]
                if stored != [t["digits"] for t in answer["tokens"]]:
                    self.report.bad("lost", f"{owner}/{key}: vend {vend_id} holds other tokens than answered")
                if not any(r["vend_id"] == vend_id for r in idem.get((owner, key), [])):
                    self.report.bad("lost", f"{owner}/{key}: no idempotency row of this key names vend {vend_id}")
        self.report.figures["acknowledged"] = acked

    def duplicates(self) -> None:
        for (owner, key), k in self.story.keys.items():
            if len(k.vend_ids) > 1:
                self.report.bad("duplicated", f"{owner}/{key}: answered with {len(k.vend_ids)} different vends")
        per_key: Counter[tuple[int, str]] = Counter(
            (int(r["api_key_id"]), r["key"]) for r in self.db["idempotency"] if r["vend_id"] is not None
        )
        for (api_key_id, key), n in per_key.items():
            if n > 1:
                self.report.bad("duplicated", f"{self.key_names.get(api_key_id)}/{key}: {n} vends in the database")
        refs: Counter[tuple[str, str]] = Counter((p["provider"], p["provider_ref"]) for p in self.db["payments"])
        for ref, n in refs.items():
            if n > 1:
                self.report.bad("duplicated", f"payment {ref}: {n} rows")
        pay_vends: Counter[str] = Counter(p["vend_id"] for p in self.db["payments"] if p["vend_id"])
        for vend_id, n in pay_vends.items():
            if n > 1:
                self.report.bad("duplicated", f"vend {vend_id} pays for {n} payments")
        per_idem_vend: Counter[str] = Counter(r["vend_id"] for r in self.db["idempotency"] if r["vend_id"])
        for vend_id, n in per_idem_vend.items():
            if n > 1:
                self.report.bad("duplicated", f"vend {vend_id} answers {n} idempotency keys")

    def resolution(self) -> None:
        in_doubt = committed = 0
        idem = {(self.key_names.get(int(r["api_key_id"]), "?"), r["key"]): r for r in self.db["idempotency"]}
        for (owner, key), k in self.story.keys.items():
            if "info" not in k.outcomes:
                continue
            in_doubt += 1
            row = idem.get((owner, key))
            if row is not None and row["vend_id"] in self.vends:
                committed += 1
            last_info = max(i for i, o in enumerate(k.outcomes) if o == "info")
            if not any(o in ("ok", "fail") for o in k.outcomes[last_info:]):
                self.report.bad("unresolved", f"{owner}/{key}: its last outcome is unknown ({k.outcomes[-3:]})")
        self.report.figures.update(in_doubt_keys=in_doubt, in_doubt_committed=committed)

    def phantoms(self) -> None:
        sent = set(self.story.keys)
        named = {}
        for r in self.db["idempotency"]:
            if r["vend_id"] is not None:
                named[r["vend_id"]] = (self.key_names.get(int(r["api_key_id"]), "?"), r["key"])
        workload_keys = set(self.story.setup.get("api_key_ids", {}))
        paid = {f"pay:{p['id']}" for p in self.db["payments"]}
        for vend_id, vend in self.vends.items():
            owner_key = named.get(vend_id)
            if owner_key is None:
                if vend["api_key_id"] is not None:
                    self.report.bad("phantom", f"vend {vend_id}: no idempotency row names it")
                continue
            owner, key = owner_key
            if owner in workload_keys and owner_key not in sent:
                self.report.bad("phantom", f"vend {vend_id}: key {owner}/{key} was never sent")
            elif owner not in workload_keys and key.startswith("pay:") and key not in paid:
                self.report.bad("phantom", f"vend {vend_id}: {key} is no payment")

    # -------------------------------------------------- I5 TIDs, I6 decode, I7 meter replay

    def tids(self) -> None:
        last: dict[tuple[int, int], int] = {}
        seen: set[tuple[int, int, int]] = set()
        for t in self.db["tokens"]:  # in id order: ids are taken under the meter's row lock, in issue order
            if t["tid"] is None:
                continue
            ident = (t["meter_id"], t["base_date"], t["tid"])
            if ident in seen:
                self.report.bad("tid", f"meter {t['meter_id']}: TID {t['tid']} issued twice")
            seen.add(ident)
            prev = last.get(ident[:2])
            if prev is not None and t["tid"] <= prev:
                self.report.bad("tid", f"meter {t['meter_id']}: TID {t['tid']} issued after {prev}")
            last[ident[:2]] = max(prev or -1, t["tid"])
        self.report.figures["tid_repeats"] = self.report.violations["tid"]

    def _decoder_key(self, meter: dict[str, Any], base_date: int) -> int:
        number = sts.MeterNumber.parse(meter["drn"], meter["iin"])
        return int(sts.derive_decoder_key(
            int(meter["dkga"]), self.vending_key, number, int(meter["kt"]), meter["sgc"], int(meter["ti"]),
            int(meter["krn"]), sts.BaseDate(base_date), sts.EA(int(meter["ea"])),
        ))  # fmt: skip

    def decoding(self) -> None:
        keys: dict[tuple[int, int], int] = {}
        per_meter: dict[int, list[tuple[dict[str, Any], Any]]] = defaultdict(list)
        for t in self.db["tokens"]:
            meter = self.meters[t["meter_id"]]
            ident = (meter["id"], t["base_date"])
            if ident not in keys:
                keys[ident] = self._decoder_key(meter, t["base_date"])
            try:
                token = sts.decode(t["digits"], sts.EA(int(meter["ea"])), keys[ident])
            except sts.StsError as exc:
                self.report.bad("decode", f"token {t['id']} of meter {meter['drn']}: {type(exc).__name__}")
                continue
            got = (token.token_class, token.subclass, getattr(token, "tid", None), getattr(token, "amount", t["units"]))
            want = (t["token_class"], t["subclass"], t["tid"], t["units"])
            if got != want:
                self.report.bad("decode", f"token {t['id']} of meter {meter['drn']}: decodes to {got}, row {want}")
            per_meter[meter["id"]].append((t, token))
        self._replay(per_meter, keys)

    def _replay(self, per_meter: dict[int, list[tuple[dict[str, Any], Any]]], keys: dict[tuple[int, int], int]) -> None:
        replayed = 0
        sold: Counter[int] = Counter()
        for v in self.vends.values():
            sold[v["meter_id"]] += int(v["units"])
        for meter_id, items in per_meter.items():
            meter = self.meters[meter_id]
            base = items[0][0]["base_date"]
            virtual = Meter.create(
                drn=meter["drn"], iin=meter["iin"], ea=int(meter["ea"]), decoder_key=keys[(meter_id, base)],
                sgc=meter["sgc"], ti=int(meter["ti"]), krn=int(meter["krn"]), kt=int(meter["kt"]),
                ken=int(meter["ken"]), profile="legacy-ea07" if int(meter["ea"]) == 7 else "edition2-ea11",
            )  # fmt: skip
            ordered = sorted(items, key=lambda x: x[0]["tid"] if x[0]["tid"] is not None else -1)
            for t, _ in ordered:
                at = (
                    sts.datetime_from_tid(t["tid"], t["base_date"]) if t["tid"] is not None else dt.datetime(2030, 1, 1)
                )
                result = virtual.enter(t["digits"], at)
                replayed += 1
                if result.result not in ACCEPTED:
                    self.report.bad("meter_replay", f"meter {meter['drn']}: token {t['id']} {result.result}")
            credit = int(virtual.registers().get("electricity", 0))
            if credit != sold[meter_id]:
                self.report.bad("meter_replay", f"meter {meter['drn']}: credit {credit}, sold {sold[meter_id]}")
            if ordered:
                again = virtual.enter(ordered[-1][0]["digits"], dt.datetime(2030, 1, 1))
                if str(again.result) != "used":
                    self.report.bad("meter_replay", f"meter {meter['drn']}: a token entered twice was {again.result}")
        self.report.figures["meter_replay_tokens"] = replayed

    # -------------------------------------------------- I8 ledger, I10 audit

    def ledger(self) -> None:
        per_vend: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        per_account: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for line in self.db["ledger"]:
            per_vend[line["vend_id"]][0] += int(line["debit"])
            per_vend[line["vend_id"]][1] += int(line["credit"])
            per_account[line["account"]][0] += int(line["debit"])
            per_account[line["account"]][1] += int(line["credit"])
        for vend_id, (d, c) in per_vend.items():
            if d != c:
                self.report.bad("ledger", f"vend {vend_id}: debits {d} != credits {c}")
        sales: Counter[str] = Counter()
        for vend_id, vend in self.vends.items():
            if vend_id not in per_vend:
                self.report.bad("ledger", f"vend {vend_id}: no ledger lines")
            if vend["kind"] == "purchase":
                sales[f"vendor:{vend['vendor_id'] or 'direct'}"] += int(vend["amount"])
        for account, total in sales.items():
            if per_account[account][0] - per_account[account][1] != total:
                self.report.bad("ledger", f"{account}: debits {per_account[account][0]} != sales {total}")
        opening = self.story.setup.get("customers", {})
        for cust in self.db["customers"]:
            start: dict[str, Any] | None = opening.get(str(cust["id"]))
            if start is None:
                continue
            acc = f"customer:{cust['id']}"
            checks = {
                "debt": (per_account[f"{acc}:debt"][1], int(start["debt"]) - int(cust["debt"])),
                "carried": (per_account[f"{acc}:carried"][1] - per_account[f"{acc}:carried"][0],
                            int(cust["carried"]) - int(start["carried"])),
                "refund": (per_account[f"{acc}:refund"][1], int(cust["refund_balance"]) - int(start["refund_balance"])),
            }  # fmt: skip
            for name, (ledger_says, balance_says) in checks.items():
                if ledger_says != balance_says:
                    self.report.bad("ledger", f"{acc}:{name}: ledger {ledger_says}, balance moved {balance_says}")
        total_d = sum(d for d, _ in per_account.values())
        total_c = sum(c for _, c in per_account.values())
        self.report.figures["ledger_balanced"] = total_d == total_c and not self.report.violations["ledger"]

    def audit(self) -> None:
        entries: Counter[str] = Counter(a["entity_id"] for a in self.db["audit"])
        for vend_id in self.vends:
            if entries[vend_id] != 1:
                self.report.bad("audit", f"vend {vend_id}: {entries[vend_id]} audit entries")
        for vend_id in entries:
            if vend_id not in self.vends:
                self.report.bad("audit", f"an audit entry for vend {vend_id}, which is not there")
        if not any(t["tgname"] == "audit_no_change" for t in self.db["triggers"]):
            self.report.bad("audit", "the audit table's append-only trigger is missing")
        self.report.figures["audit_entries"] = sum(entries.values())

    # -------------------------------------------------- I11 outbox, deliveries, payments

    def outbox(self) -> None:
        dedupe: Counter[str] = Counter(o["dedupe_key"] for o in self.db["outbox"])
        for k, n in dedupe.items():
            if n > 1:
                self.report.bad("outbox", f"dedupe key {k}: {n} rows")
        receipts: Counter[str] = Counter(o["vend_id"] for o in self.db["outbox"] if o["channel"] == "receipt")
        for vend_id in self.vends:
            if receipts[vend_id] != 1:
                self.report.bad("outbox", f"vend {vend_id}: {receipts[vend_id]} receipt rows")
        connected = {e["meter_id"] for e in self.db["endpoints"]}
        commands: Counter[str] = Counter(c["vend_id"] for c in self.db["commands"] if c["vend_id"])
        for vend_id, vend in self.vends.items():
            if vend["meter_id"] in connected and commands[vend_id] != 1:
                self.report.bad("outbox", f"vend {vend_id} for a connected meter: {commands[vend_id]} commands")
        states: Counter[str] = Counter(o["status"] for o in self.db["outbox"])
        self.report.figures["outbox"] = dict(states)
        if self.drained:
            for o in self.db["outbox"]:
                if o["status"] != "sent":
                    self.report.bad("outbox", f"row {o['id']} ({o['channel']}) is {o['status']} after draining")
            for c in self.db["commands"]:
                if c["status"] != "acknowledged":
                    self.report.bad("outbox", f"command {c['id']} is {c['status']} after draining: {c['error']}")
        self.report.figures["commands"] = dict(Counter(c["status"] for c in self.db["commands"]))

    def delivered(self) -> None:
        if not self.meter_files:
            return
        from mita.meter import storage

        by_drn = {m["drn"]: m for m in self.db["meters"]}
        sold: Counter[int] = Counter()
        for v in self.vends.values():
            sold[v["meter_id"]] += int(v["units"])
        checked = 0
        for drn, path in self.meter_files.items():
            meter = by_drn.get(drn)
            if meter is None:
                continue
            state = storage.load(path).state
            # credit ever added: what is left plus what the household drew (internal units of the register)
            added = (int(state.registers.get(0, 0)) + int(state.consumed)) // PER_BASE_UNIT
            checked += 1
            if added != sold[meter["id"]]:
                self.report.bad("delivered", f"meter {drn}: {added} units entered, {sold[meter['id']]} sold")
        self.report.figures["meters_checked_in_field"] = checked

    def payments(self) -> None:
        by_ref: dict[str, dict[str, Any]] = {}
        for p in self.db["payments"]:
            by_ref[p["provider_ref"]] = p
            if p["receipt"]:
                by_ref[p["receipt"]] = p
            if p["status"] not in FINAL_PAYMENTS:
                self.report.bad("payments", f"payment {p['id']} is {p['status']}, not final")
            if p["vend_id"] is not None and p["vend_id"] not in self.vends:
                self.report.bad("payments", f"payment {p['id']}: its vend {p['vend_id']} is not there")
        for paid in self.story.payments:
            ref = paid.get("trans_id")
            found = by_ref.get(str(ref))
            if found is None:
                self.report.bad("payments", f"paid transaction {ref} has no payment")
            elif found["vend_id"] is None and found["status"] != "refunded":
                self.report.bad("payments", f"paid transaction {ref} has no vend ({found['status']})")
        states: Counter[str] = Counter(p["status"] for p in self.db["payments"])
        self.report.figures["payments"] = dict(states)
        self.report.figures["paid_transactions"] = len(self.story.payments)

    # -------------------------------------------------- I14 recovery

    def recovery(self) -> None:
        times = sorted(self.story.ok_times)
        took = []
        counts: Counter[str] = Counter()
        import bisect

        for f in self.story.faults:
            counts[f["fault"]] += 1
            i = bisect.bisect_right(times, f["t"])
            if i == len(times):
                continue  # nothing was asked after it
            seconds = times[i] - f["t"]
            took.append(seconds)
            if seconds > self.recovery_limit_s:
                self.report.bad("recovery", f"{f['fault']} at {f['t']:.1f}s: next acknowledgement {seconds:.1f}s later")
        self.report.figures["faults"] = dict(counts)
        if took:
            self.report.figures["recovery_p50_s"] = round(statistics.median(took), 3)
            self.report.figures["recovery_max_s"] = round(max(took), 3)


def check(
    history: Path, url: str, vending_key: bytes, *, drained: bool = False, meter_files: dict[str, Path] | None = None,
    recovery_limit_s: float = 30.0,
) -> Report:  # fmt: skip
    """Check a run: its history file against its database."""
    story = load_history(history)
    return Checker(story, snapshot(url), vending_key, drained, meter_files or {}, recovery_limit_s).run()


def main(argv: Iterable[str] | None = None, out: Callable[[str], Any] = print) -> int:
    """``python -m reliability.checker HISTORY URL`` (run from tests/): the report as JSON; exit 1 if it fails."""
    from mita.vend import sample

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("history", type=Path)
    p.add_argument("url")
    p.add_argument("--drained", action="store_true")
    args = p.parse_args(list(argv) if argv is not None else None)
    report = check(args.history, args.url, bytes.fromhex(sample.TEST_VENDING_KEY), drained=args.drained)
    out(json.dumps(report.as_json(), indent=2, default=str))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
