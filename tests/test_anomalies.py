"""Abnormal-reading rules on hand-computed cases (analytics/anomalies.py, anomaly_score.py)."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.anomalies import (
    AnomalyInput,
    Events,
    Rule,
    evaluate,
    load_rules,
    sustained,
)
from analytics.anomaly_balance import _beta_split, _cleaned_dloss, _others_removed
from analytics.anomaly_score import score, worklist
from analytics.energy import Flag, interval_energy
from analytics.lineloss import Status


def rule(name, suggests="x", weight=1.0, severity="high", **params):
    return {name: Rule(name, severity, weight, suggests, params)}


def base(energy, **kw):
    e = np.asarray(energy, dtype=float)
    return AnomalyInput(
        energy=e, flags=np.zeros(e.shape, np.int8), day_of=np.zeros(e.shape[1], int), **kw
    )


def test_sustained_marks_whole_runs_of_at_least_run():
    m = np.array([[1, 1, 0, 1, 1, 1, 0, 1]], bool)
    # runs: [0,1] length 2, [3,5] length 3, [7] length 1 → with run 3 only 3..5 survive
    assert sustained(m, 3).tolist() == [[0, 0, 0, 1, 1, 1, 0, 0]]
    assert sustained(m, 1).tolist() == m.tolist()


def test_non_monotonic_is_a_reset_not_a_rollover():
    # registers 999999.5 → 0.3 wraps (d = −999999.2 + 10⁶ = 0.8 ≤ max 5): ROLLOVER, not hit;
    # 50.0 → 20.0 on a meter without rollover is a RESET: hit at interval 1
    reg = np.array([[999998.0, 999999.5, 0.3, 1.0], [40.0, 50.0, 20.0, 21.0]])
    energy, flags = interval_energy(reg, np.ones(2), np.array([1e6, np.inf]), np.full(2, 5.0))
    assert flags[0, 1] == Flag.ROLLOVER and flags[1, 1] == Flag.RESET
    inp = AnomalyInput(energy=energy, flags=flags, day_of=np.zeros(3, int))
    h = evaluate(inp, rule("non_monotonic"))["non_monotonic"]
    assert h.hit.tolist() == [False, True] and h.first.tolist() == [-1, 1]


def test_spike_beyond_capacity():
    # capacity 2 kWh per interval: 2.5 is beyond, 2.0 is not
    inp = base([[1.0, 2.5, 2.0]], capacity_kwh=np.array([2.0]))
    h = evaluate(inp, rule("spike"))["spike"]
    assert h.hit[0] and h.first[0] == 1 and h.count[0] == 1 and h.value[0] == 2.5


def test_stopped_needs_voltage_and_a_long_enough_run():
    # meter 0: zero for 4 intervals at 230 V (≥ 0.7 × 220 = 154) → hit from interval 1
    # meter 1: zero for 4 intervals but 0 V (outage) → not stopped
    # meter 2: zero for 4 intervals with export rising (reverse wiring) → not "stopped"
    e = np.array([[0.2, 0, 0, 0, 0], [0.2, 0, 0, 0, 0], [0.2, 0, 0, 0, 0]])
    v = np.array([[230.0] * 5, [230.0, 0, 0, 0, 0], [230.0] * 5])[:, None, :]
    exp = np.array([[0.0] * 5, [0.0] * 5, [0, 0.2, 0.2, 0.2, 0.2]])
    inp = base(e, voltage=v, nominal_v=np.full(3, 220.0), export=exp)
    h = evaluate(inp, rule("stopped", min_run=4, voltage_present_frac=0.7))["stopped"]
    assert h.hit.tolist() == [True, False, False] and h.first[0] == 1 and h.count[0] == 4
    # a run of 4 does not make min_run 5
    assert not evaluate(inp, rule("stopped", min_run=5))["stopped"].hit.any()


def test_zero_energy_while_current_flows():
    # 2 A on phase B while the register stands still for 2 intervals
    e = np.array([[0.1, 0.0, 0.0]])
    cur = np.array([[[0.0, 0.0, 0.0], [2.0, 2.0, 2.0], [0.0, 0.0, 0.0]]])
    h = evaluate(base(e, current=cur), rule("zero_energy_current", min_run=2))
    assert h["zero_energy_current"].first[0] == 1 and h["zero_energy_current"].value[0] == 2.0


def test_reverse_energy_only_on_consumers():
    exp = np.array([[0.0, 0.3, 0.4], [0.0, 0.3, 0.4]])
    inp = base(np.zeros((2, 3)), export=exp, consumer=np.array([True, False]))
    h = evaluate(inp, rule("reverse_energy", min_kwh=0.01, min_run=2))["reverse_energy"]
    assert h.hit.tolist() == [True, False] and h.first[0] == 1 and h.value[0] == 0.4


def test_voltage_loss_one_phase_down_others_healthy():
    # nominal 220: bound 0.78 × 220 = 171.6. Phase C at 100 V for 2 intervals while A, B 225 V.
    # Meter 1: all three phases at 0 V (an outage, not 失压) → no hit
    v = np.full((2, 3, 3), 225.0)
    v[0, 2, 1:] = 100.0
    v[1] = 0.0
    inp = base(np.zeros((2, 3)), voltage=v, nominal_v=np.full(2, 220.0))
    h = evaluate(inp, rule("voltage_loss", min_run=2))["voltage_loss"]
    assert h.hit.tolist() == [True, False] and h.first[0] == 1 and h.value[0] == 100.0


def test_current_loss_and_unbalance():
    # phase currents A, B, C: 10, 10, 0 A at 230 V: C lost (< 0.05 A while 10 A elsewhere);
    # unbalance (max − min) / max = (10 − 0) / 10 = 1.0 > 0.5
    cur = np.tile(np.array([10.0, 10.0, 0.0])[None, :, None], (1, 1, 2))
    v = np.full((1, 3, 2), 230.0)
    inp = base(np.ones((1, 2)), current=cur, voltage=v, nominal_v=np.array([220.0]))
    rules = rule("current_loss", min_run=2) | rule("current_unbalance", min_run=2, limit=0.5)
    h = evaluate(inp, rules)
    assert h["current_loss"].hit[0] and h["current_loss"].value[0] == 10.0
    assert h["current_unbalance"].hit[0] and h["current_unbalance"].value[0] == 1.0
    # 10, 10, 6 A: (10 − 6) / 10 = 0.4 ≤ 0.5 → balanced enough; no phase lost
    cur[0, 2] = 6.0
    h = evaluate(base(np.ones((1, 2)), current=cur, voltage=v, nominal_v=np.array([220.0])), rules)
    assert not h["current_loss"].hit[0] and not h["current_unbalance"].hit[0]


def test_demand_over_contract():
    # 15-min energy 30 kWh → 30 × 3600 / 900 = 120 kW > 100 × 1.05 = 105 kW; 26 kWh → 104 kW not
    inp = base([[26.0, 30.0]], contract_kw=np.array([100.0]))
    h = evaluate(inp, rule("demand_over_contract", margin=0.05))["demand_over_contract"]
    assert h.first[0] == 1 and h.value[0] == 120.0 and h.count[0] == 1


def test_event_rules():
    ev = Events(
        meter=np.array([0, 0, 1, 1, 1, 1]),
        t=np.array([5, 2, 1, 3, 4, 6]),
        kind=np.array(
            ["clock_drift", "cover_open", "clock_drift", "power_down", "power_down", "power_down"]
        ),
        value=np.array([400.0, 0, 100.0, 0, 0, 0]),
    )
    inp = base(np.zeros((2, 8)), events=ev)
    rules = rule("clock_drift", bound_s=300) | rule("cover_open") | rule("power_down", min_count=3)
    h = evaluate(inp, rules)
    # drift 400 s > 300 on meter 0; 100 s on meter 1 within bound
    assert h["clock_drift"].hit.tolist() == [True, False] and h["clock_drift"].value[0] == 400
    assert h["cover_open"].hit.tolist() == [True, False] and h["cover_open"].first[0] == 2
    # three power-downs on meter 1 (first at 3) make min_count 3
    assert h["power_down"].hit.tolist() == [False, True] and h["power_down"].first[1] == 3


def test_consumption_drop_against_own_history():
    # 6 days of 1 interval each: daily 10, 11, 9 then 6, 7, 5. Split before day 3:
    # before mean 10 (var 1), after 6 (var 1): z = (10 − 6)/√(1/3 + 1/3) = 4.899; drop 1 − 6/10
    e = np.array([[10.0, 11, 9, 6, 7, 5]])
    inp = AnomalyInput(energy=e, flags=np.zeros(e.shape, np.int8), day_of=np.arange(6))
    h = evaluate(inp, rule("consumption_drop", min_drop=0.15, min_z=3.0, min_days=2))
    h = h["consumption_drop"]
    assert h.hit[0] and h.first[0] == 3
    assert h.value[0] == pytest.approx(0.4) and h.extra["z"][0] == pytest.approx(4 / np.sqrt(2 / 3))


def test_loss_step_theft_shows_in_the_area_loss():
    # one meter, 4 days × 4 intervals, each day's registered energy 1, 3, 3, 1 (ΔE: the first
    # interval of a day 1 − 1 = 0, then +2, 0, −2). From day 2 (interval 8) a third of the load
    # is stolen: stolen / registered = (1/3)/(2/3) = 0.5, so loss = 2 + 0.5·E from t = 8.
    # Split before day 2: before, Δloss = 0 → β_b = 0, residual 0; after (t = 8…15), Δloss =
    # 0.5·ΔE except t = 8 where the level jumps by 0.5·1 = 0.5 with ΔE = 0:
    #   Σ Δr·ΔE = 4 × (1 × 2) = 8, Σ ΔE² = 4 × 4 = 16 → β_a = 0.5, step 0.5;
    #   residual (Σ Δr² − β²·Σ ΔE²)/8 = (4.25 − 4)/8 = 0.03125 → var β_a = 0.03125/16,
    #   z = 0.5/√0.001953 = 11.31. Split before day 3: β_b = 4/24, β_a = 0.5, z ≈ 4.3 < 11.3;
    # before day 1: the first side has 3 differences < min 2 days × ½ × 4 → not tried.
    e = np.tile([1.0, 3.0, 3.0, 1.0], 4)[None, :]
    jump = np.arange(16) >= 8
    inp = AnomalyInput(
        energy=e,
        flags=np.zeros(e.shape, np.int8),
        day_of=np.repeat(np.arange(4), 4),
        area_loss=np.where(jump, 2.0 + 0.5 * e, 2.0),
    )
    r = rule("loss_step", min_step=0.12, min_z=6.0, min_days=2, negative_suggests="mis")
    h = evaluate(inp, r)["loss_step"]
    assert h.hit[0] and h.first[0] == 8 and h.suggests[0] == "x"
    assert h.value[0] == pytest.approx(0.5)
    assert h.extra["z"][0] == pytest.approx(0.5 / np.sqrt(0.03125 / 16))
    # the meter leaves the area's sales wrongly from day 2 (loss = 2 − 0.5·E): the negative kind
    inp.area_loss = np.where(jump, 2.0 - 0.5 * e, 2.0)
    h = evaluate(inp, r)["loss_step"]
    assert h.hit[0] and h.suggests[0] == "mis" and h.value[0] == pytest.approx(-0.5)
    # … and when the ledger changed the meter's multiplier at interval 9 (day 2): wrong multiplier
    inp.multiplier_change = np.array([9])
    r = rule("loss_step", min_z=6.0, negative_suggests="mis", multiplier_suggests="wm")
    assert evaluate(inp, r)["loss_step"].suggests[0] == "wm"


def test_area_status_and_issue9_flags():
    st = np.array([[Status.HIGH] * 3 + [Status.NORMAL], [Status.NEGATIVE] * 4], dtype=np.int8)
    inp = base(np.ones((2, 4)), area_status=st, meter_error_pct=np.array([-25.0, 3.0]),
               meter_error_flagged=np.array([True, True]), misassigned=np.array([False, True]),
               wrong_multiplier=np.array([True, False]))  # fmt: skip
    rules = (rule("area_loss_high", min_intervals=3) | rule("area_loss_negative", min_intervals=3)
             | rule("meter_error", suggests="meter_fault", theft_below_pct=-10.0)
             | rule("misassigned") | rule("wrong_multiplier"))  # fmt: skip
    h = evaluate(inp, rules)
    assert h["area_loss_high"].hit.tolist() == [True, False] and h["area_loss_high"].count[0] == 3
    assert h["area_loss_negative"].hit.tolist() == [False, True]
    # −25 % is slower than −10 %: suggests theft; +3 % a meter fault
    assert h["meter_error"].suggests.tolist() == ["theft", "meter_fault"]
    assert h["misassigned"].hit.tolist() == [False, True]
    assert h["wrong_multiplier"].hit.tolist() == [True, False]


def test_missing_data_gives_no_verdict():
    e = np.full((1, 5), np.nan)
    v = np.full((1, 1, 5), np.nan)
    inp = base(e, voltage=v, nominal_v=np.array([220.0]), export=np.full((1, 5), np.nan))
    h = evaluate(
        inp,
        rule("stopped", min_run=2)
        | rule("reverse_energy", min_run=1)
        | rule("voltage_loss", min_run=1),
    )
    assert not any(x.hit.any() for x in h.values())


def test_score_and_worklist_rank_per_area():
    # meter 0 (area 0): stopped (w 5) + cover_open (w 1.5, theft) + consumption drop (w 1,
    # theft: days 1,1,1,0 then 0,0 — split before day 4: 0.75 vs 0, z = 0.75/√(0.25/4) = 3)
    # → total 7.5, kind stopped (5 > 2.5)
    # meter 1 (area 0): cover_open only → 1.5 < min_score 2: not listed
    # meter 2 (area 1): cover_open (1.5) + consumption drop (1, theft) → 2.5, kind theft
    rules = rule("stopped", "stopped", 5.0, min_run=2) | rule("cover_open", "theft", 1.5, "medium")
    rules |= rule("consumption_drop", "theft", 1.0, "medium", min_drop=0.15, min_z=3.0, min_days=2)
    e = np.array([[1.0, 1, 1, 0, 0, 0], [1.0] * 6, [10.0, 11, 9, 6, 7, 5]])
    ev = Events(np.array([0, 1, 2]), np.array([1, 0, 4]), np.array(["cover_open"] * 3), np.zeros(3))
    v = np.full((3, 1, 6), 230.0)
    inp = AnomalyInput(
        e,
        np.zeros(e.shape, np.int8),
        np.arange(6),
        voltage=v,
        nominal_v=np.full(3, 220.0),
        events=ev,
    )
    hits = evaluate(inp, rules)
    sc = score(hits, rules, 3)
    assert sc.total.tolist() == [7.5, 1.5, 2.5]
    assert sc.kind.tolist() == ["stopped", "theft", "theft"]
    assert sc.of("theft").tolist() == [2.5, 1.5, 2.5]
    assert sc.since.tolist() == [1, 0, 3]  # earliest hit: cover open at 1; drop from day 3
    wl = worklist(hits, rules, sc, np.array([0, 0, 1]), min_score=2.0)
    assert [(w.meter, w.area, w.rank, w.kind) for w in wl] == [
        (0, 0, 1, "stopped"),
        (2, 1, 1, "theft"),
    ]
    assert set(wl[0].evidence) == {"stopped", "cover_open", "consumption_drop"}
    assert wl[0].evidence["stopped"]["first"] == 3 and wl[0].evidence["stopped"]["intervals"] == 3


def test_rules_file_loads_and_bad_files_say_why(tmp_path):
    rules = load_rules()
    assert {"stopped", "reverse_energy", "loss_step", "drop_with_loss"} <= set(rules)
    assert all(r.weight >= 0 for r in rules.values())
    bad = tmp_path / "r.toml"
    bad.write_text('[rule.nonsense]\nseverity = "high"\nweight = 1\nsuggests = "x"\n')
    with pytest.raises(ValueError, match="unknown rule 'nonsense'"):
        load_rules(bad)
    bad.write_text('[rule.stopped]\nseverity = "dire"\nweight = 1\nsuggests = "x"\n')
    with pytest.raises(ValueError, match="severity 'dire'"):
        load_rules(bad)
    bad.write_text('[rule.stopped]\nseverity = "high"\nsuggests = "x"\n')
    with pytest.raises(ValueError, match="lacks 'weight'"):
        load_rules(bad)
    bad.write_text("[rule.stopped\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_rules(bad)
    with pytest.raises(ValueError, match="rules file not found"):
        load_rules(tmp_path / "missing.toml")


def test_drop_with_loss_both_sides_on_one_day():
    # 6 days × 2 intervals. Registered energy per day: 1+3, 1+3.5, 1+2.5, then a theft of
    # half the load: 0.5+1.5, 0.5+1.75, 0.5+1.25 (daily 4, 4.5, 3.5, 2, 2.25, 1.75).
    # The area's loss: 1, plus the stolen energy (= the registered, share ½) from t = 6.
    # The rule takes the day maximising min(drop z, loss z):
    # - split before day 3: drop z = (4 − 2)/√(0.25/3 + 0.0625/3) = 6.197, but the loss side
    #   carries the transition (t = 6: Δloss +0.5 while ΔE −2): β_a = 4.6875/9.6875, z 1.93;
    # - split before day 4: daily 4, 4.5, 3.5, 2 (mean 3.5, var 3.5/3) against 2.25, 1.75
    #   (mean 2, var 0.125): z = 1.5/√(1.1667/4 + 0.125/2) = 2.5205, drop 1 − 2/3.5 = 0.4286;
    #   loss: after (t = 8…11) Δloss = ΔE exactly → β_a = 1, residual 0; before (t = 1…7)
    #   Σ Δloss·ΔE = 0.5·(−2) + 1·1 = 0 → β_b = 0, Σ ΔE² = 27.75, Σ Δloss² = 1.25:
    #   var β_b = (1.25/7)/27.75 → z = 1/√0.006435 = 12.466; min 2.52 > 1.93 → day 4.
    e = np.array([[1, 3, 1, 3.5, 1, 2.5, 0.5, 1.5, 0.5, 1.75, 0.5, 1.25]])
    inp = AnomalyInput(
        energy=e,
        flags=np.zeros(e.shape, np.int8),
        day_of=np.repeat(np.arange(6), 2),
        area_loss=np.where(np.arange(12) >= 6, 1 + e, 1.0),
    )
    params = dict(min_drop=0.2, min_drop_z=2.5, min_loss_z=2.0, min_step=0.1, min_days=2)
    h = evaluate(inp, rule("drop_with_loss", "theft", **params))["drop_with_loss"]
    assert h.hit[0] and h.first[0] == 8 and h.suggests[0] == "theft"
    assert h.value[0] == pytest.approx(1 - 2 / 3.5)
    assert h.extra["drop_z"][0] == pytest.approx(1.5 / np.sqrt(3.5 / 3 / 4 + 0.125 / 2))
    assert h.extra["loss_step"][0] == pytest.approx(1.0)
    assert h.extra["loss_z"][0] == pytest.approx(1 / np.sqrt(1.25 / 7 / 27.75))
    # a drop of 0.43 below min_drop 0.5: no hit
    params["min_drop"] = 0.5
    assert not evaluate(inp, rule("drop_with_loss", **params))["drop_with_loss"].hit[0]


def test_service_line_losses_are_taken_out_of_the_area_loss_first():
    # two customers of one area; the loss is exactly their service lines' I²R, 0.1·E1² +
    # 0.2·E2²: the regression on Δ(E²) explains all of it, nothing is left to track a load
    rng = np.random.default_rng(0)
    e = rng.uniform(0.1, 2.0, (2, 40))
    loss = np.broadcast_to(0.1 * e[0] ** 2 + 0.2 * e[1] ** 2, (2, 40))
    inp = AnomalyInput(e, np.zeros(e.shape, np.int8), np.repeat(np.arange(4), 10),
                       area_loss=loss.copy(), area_of=np.array([0, 0]))  # fmt: skip
    assert np.nanmax(np.abs(_cleaned_dloss(inp))) < 1e-9
    assert np.nanmax(np.abs(np.diff(loss, axis=1))) > 0.1  # the raw loss did move


def test_multiplier_jump_tells_a_ledger_only_change_from_a_real_ct_swap():
    # 200 intervals, the ledger's multiplier doubles at t = 100 for meters 0 and 1.
    # Meter 0: the field did not change (wrong ledger): primary energy 1, 3, … then 2, 6, …
    #   means 2 → 4, ratio 2 = the ledger's; z = 2/√(1.0101/100 + 4.0404/100) = 8.90
    #   (sample variances 100/99 and 400/99).
    # Meter 1: a real CT swap: the primary energy goes on as before (ratio 1): no hit.
    # Meter 2: no ledger change: not tested.
    base_e = np.tile([1.0, 3.0], 100)
    e = np.stack([np.where(np.arange(200) >= 100, 2 * base_e, base_e), base_e, base_e])
    inp = base(
        e, multiplier_change=np.array([100, 100, -1]), multiplier_ratio=np.array([2.0, 2.0, np.nan])
    )
    h = evaluate(inp, rule("multiplier_jump", "wrong_multiplier", min_z=3.0, min_intervals=96))
    h = h["multiplier_jump"]
    assert h.hit.tolist() == [True, False, False]
    assert h.first[0] == 100 and h.value[0] == pytest.approx(2.0)
    assert h.extra["z"][0] == pytest.approx(2 / np.sqrt((100 / 99) / 100 + (400 / 99) / 100))


def test_drop_balance_a_drop_the_balance_bears_out():
    # The case above (6 days × 2 intervals, half the load stolen from t = 6). The strongest
    # drop splits before day 3: daily 4, 4.5, 3.5 | 2, 2.25, 1.75, z = 2/√(0.25/3 + 0.0625/3)
    # = 6.197, δ = 1 − 2/4 = 0.5: a theft of δ steps β up by δ/(1 − δ) = 1.
    # Loss side at that split (Δ = first differences, t = 0 unknown):
    #   before t = 1…5: ΔE 2, −2, 2.5, −2.5, 1.5 (Σ ΔE² 22.75), Δloss 0 → β_b = 0, var 0;
    #   after t = 6…11: ΔE −2, 1, −1, 1.25, −1.25, 0.75 (Σ ΔE² 9.6875), Δloss 0.5, 1, −1,
    #   1.25, −1.25, 0.75: Σ Δloss·ΔE = 4.6875, Σ Δloss² = 5.9375 → β_a = 4.6875/9.6875
    #   = 0.48387, var = (5.9375/6 − β_a²·9.6875/6)/9.6875 = 0.063130, se = 0.25126.
    # Against the theft's step: z = (0.48387 − 1)/0.25126 = −2.054: within 2.5 se (hit), not
    # within 2. Meter 1 drops the same but its area's loss stays flat: β step 0 with se 0,
    # z = −∞, no hit.
    e = np.array([[1, 3, 1, 3.5, 1, 2.5, 0.5, 1.5, 0.5, 1.75, 0.5, 1.25]] * 2)
    loss = np.where(np.arange(12) >= 6, 1 + e[0], 1.0)
    inp = AnomalyInput(e, np.zeros(e.shape, np.int8), np.repeat(np.arange(6), 2),
                       area_loss=np.stack([loss, np.ones(12)]))  # fmt: skip
    params = dict(min_drop=0.25, min_drop_z=3.0, max_z_below=2.5, min_step=0.0, min_days=2)
    h = evaluate(inp, rule("drop_balance", "theft", **params))["drop_balance"]
    assert h.hit.tolist() == [True, False]
    assert h.first[0] == 6 and h.suggests[0] == "theft"
    assert h.value[0] == pytest.approx(0.5)
    assert h.extra["drop_z"][0] == pytest.approx(2 / np.sqrt(0.25 / 3 + 0.0625 / 3))
    beta_a = 4.6875 / 9.6875
    se = np.sqrt((5.9375 / 6 - beta_a**2 * 9.6875 / 6) / 9.6875)
    assert h.extra["loss_step"][0] == pytest.approx(beta_a)
    assert h.extra["z_vs_theft"][0] == pytest.approx((beta_a - 1.0) / se)
    assert h.extra["z_vs_theft"][0] == pytest.approx(-2.054, abs=1e-3)
    params["max_z_below"] = 2.0
    assert not evaluate(inp, rule("drop_balance", **params))["drop_balance"].hit.any()


def test_other_members_clear_beta_splits_are_taken_out_first():
    # Truth: one area, 6 days × 96 intervals; a large thief (meter 0, 0…5 kWh per interval,
    # β 0 → 0.5 from day 2) and a small one (meter 1, 0…0.2 kWh, β 0 → 0.25 from day 4), a
    # little noise. Meter 0's switching is noise in meter 1's β (sd ≈ 0.5 × 2 per interval
    # against 0.25 × 0.08): raw, meter 1's step at day 4 has z < 3; with meter 0's fitted
    # part taken out (its split has z ≫ 6), z > 10 and the step is 0.25 within 0.02, and
    # meter 0's own row keeps
    # its own part (only the *other* members are removed).
    rng = np.random.default_rng(1)
    e = np.stack([rng.uniform(0, 5, 576), rng.uniform(0, 0.2, 576)])
    e[:, [191, 383]] = 0.0  # at each start Δloss = β·E = β·ΔE: the split interval fits too
    t = np.arange(576)
    loss = 1 + 0.5 * e[0] * (t >= 192) + 0.25 * e[1] * (t >= 384) + rng.normal(0, 0.002, 576)
    inp = AnomalyInput(e, np.zeros(e.shape, np.int8), t // 96,
                       area_loss=np.stack([loss, loss]), area_of=np.array([0, 0]))  # fmt: skip
    dr = np.diff(inp.area_loss, axis=1, prepend=np.nan)
    raw = _beta_split(inp, 1, dr)
    out = _others_removed(inp, dr, 1, 6.0)
    done = _beta_split(inp, 1, out)
    step = lambda s, m, d: s[3][m, d - 1] - s[2][m, d - 1]  # noqa: E731  β_after − β_before
    assert abs(raw[1][1, 3]) < 3 < 10 < done[1][1, 3]  # z of meter 1's split at day 4
    assert step(done, 1, 4) == pytest.approx(0.25, abs=0.02)
    assert step(done, 0, 2) == pytest.approx(0.5, abs=0.02)
    # meter 1's split is not clear in the raw loss: nothing taken out of meter 0's row
    assert np.array_equal(out[0], dr[0], equal_nan=True)
    assert not np.array_equal(out[1], dr[1], equal_nan=True)
    # switched off (min_z 0): unchanged
    assert _others_removed(inp, dr, 1, 0.0) is dr


def test_voltage_drop_step_the_drop_per_registered_kwh_rises_with_a_bypass():
    # 4 days × 4 intervals, only the split before day 2 has 8 intervals a side (min_days 4).
    # The service line's drop y (bus − meter, V) = 0.5 V per kWh of true load + e, e = 0.2 at
    # the 4th interval of day 0 and −0.2 at that of day 1 and again on days 2 and 3; true load
    # 1, 3, 1, 3 per day. Meter 0 registers half of it from day 2 (x 0.5, 1.5, …).
    # Before: x̄ 2, Σ(x − x̄)² = 8, ȳ 1, Σ(x − x̄)(y − ȳ) = 6·0.5 + 0.7 + 0.3 = 4 → b 0.5;
    #   Σ(y − ȳ)² = 6·0.25 + 0.49 + 0.09 = 2.08, RSS = 2.08 − 0.5·4 = 0.08, var b = 0.08/6/8.
    # After: x̄ 1, Σ(x − x̄)² = 2, Σ(x − x̄)(y − ȳ) = 2 → b 1.0; RSS 0.08, var b = 0.08/6/2.
    # z = 0.5/√(0.08/48 + 0.08/12) = 5.477, ratio 2 (= 1/(1 − 0.5)). Meter 1 registers all
    # of it throughout: b 0.5 both sides, z 0: no hit. A phase unknown (NaN) is left out.
    load = np.tile([1.0, 3.0, 1.0, 3.0], 4)
    e = np.tile([0.0, 0.0, 0.0, 0.2, 0.0, 0.0, 0.0, -0.2], 2)
    y = 0.5 * load + e
    x = np.stack([np.where(np.arange(16) >= 8, 0.5 * load, load), load])
    volts = np.stack([np.stack([230 - y, np.full(16, np.nan)]), np.stack([230 - y, 230 - y])])
    inp = AnomalyInput(x, np.zeros(x.shape, np.int8), np.repeat(np.arange(4), 4),
                       voltage=volts, bus_voltage=np.full((2, 16), 230.0))  # fmt: skip
    h = evaluate(inp, rule("voltage_drop_step", "theft", min_z=5.0, min_ratio=1.15, min_days=4))
    h = h["voltage_drop_step"]
    assert h.hit.tolist() == [True, False]
    assert h.first[0] == 8 and h.suggests[0] == "theft"
    assert h.value[0] == pytest.approx(2.0)
    assert h.extra["before"][0] == pytest.approx(0.5) and h.extra["after"][0] == pytest.approx(1)
    assert h.extra["z"][0] == pytest.approx(0.5 / np.sqrt(0.08 / 48 + 0.08 / 12))
    assert h.extra["z"][0] == pytest.approx(5.477, abs=1e-3)
    h = evaluate(inp, rule("voltage_drop_step", min_z=6.0, min_ratio=1.15, min_days=4))
    assert not h["voltage_drop_step"].hit.any()  # z 5.48 < 6
    h = evaluate(inp, rule("voltage_drop_step", min_z=5.0, min_ratio=2.5, min_days=4))
    assert not h["voltage_drop_step"].hit.any()  # ratio 2 < 2.5
    assert "voltage_drop_step" not in evaluate(base(x), rule("voltage_drop_step"))  # no bus
