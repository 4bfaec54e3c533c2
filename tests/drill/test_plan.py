"""The drill's schedule is drawn from the seed alone, and sized as its defaults promise."""

from __future__ import annotations

import dataclasses
import json

from fargate_runtime.drill.plan import DrillConfig, build_plan, expected_interruptions


def test_same_seed_same_schedule() -> None:
    """Two plans from one seed are identical: events, order, duplicates and interruptions."""
    config = DrillConfig(seed=42, hard_kill_share=0.3, malformed_share=0.05, restart_redis=True)
    assert build_plan(config) == build_plan(config)


def test_another_seed_another_schedule() -> None:
    """A different seed changes the events and the interruptions."""
    one = build_plan(DrillConfig(seed=1))
    two = build_plan(DrillConfig(seed=2))
    assert one.messages != two.messages
    assert one.interruptions != two.interruptions


def test_the_run_id_changes_only_the_event_ids() -> None:
    """Runs with one seed differ only in their ids (so runs never share idempotency keys)."""
    one = build_plan(DrillConfig(seed=7, run_id="aaaaaa"))
    two = build_plan(DrillConfig(seed=7, run_id="bbbbbb"))
    assert one.interruptions == two.interruptions
    assert [m.body.replace("aaaaaa", "bbbbbb") for m in one.messages] == [
        m.body for m in two.messages
    ]


def test_shares_become_counts_of_messages() -> None:
    """N unique events, plus duplicates and malformed bodies as shares of N."""
    plan = build_plan(DrillConfig(events=200, duplicates_share=0.25, malformed_share=0.1))
    assert len(plan.unique_event_ids) == 200
    assert plan.duplicates == 50
    assert plan.malformed == 20
    assert len(plan.messages) == 270
    for message in plan.messages:
        if message.event_id is None:
            body = message.body
            assert not body.startswith("{") or "event_id" not in json.loads(body)
        else:
            assert json.loads(message.body)["event_id"] == message.event_id


def test_duplicates_repeat_the_same_body_later() -> None:
    """A duplicate is the same event again, as a new message after the first copy."""
    plan = build_plan(DrillConfig(events=100, duplicates_share=0.3, seed=3))
    first_seen: dict[str, int] = {}
    for index, message in enumerate(plan.messages):
        if message.event_id is None:
            continue
        if message.duplicate:
            assert message.event_id in first_seen
            assert plan.messages[first_seen[message.event_id]].body == message.body
        else:
            first_seen.setdefault(message.event_id, index)


def test_some_events_arrive_out_of_order() -> None:
    """With an out-of-order share, some account's later sequence is sent before an earlier one."""
    plan = build_plan(DrillConfig(events=300, out_of_order_share=0.3, duplicates_share=0.0))
    highest: dict[str, int] = {}
    inversions = 0
    for message in plan.messages:
        event = json.loads(message.body)
        account, sequence = event["account"], event["sequence"]
        if sequence < highest.get(account, 0):
            inversions += 1
        highest[account] = max(highest.get(account, 0), sequence)
    assert inversions > 0


def test_defaults_plan_at_least_five_interruptions_in_about_a_minute() -> None:
    """The default drill interrupts at least five times while sending for under a minute."""
    config = DrillConfig()
    plan = build_plan(config)
    assert len(plan.interruptions) >= 5
    assert expected_interruptions(config) >= 5
    assert 30 <= plan.sending_seconds <= 60
    assert all(i.at_seconds <= plan.sending_seconds for i in plan.interruptions)
    assert not any(i.hard for i in plan.interruptions)
    assert plan.redis_restart_at_seconds is None


def test_hard_kill_share_and_redis_restart_are_planned() -> None:
    """Chaos options show up in the schedule: some SIGKILLs, one Redis restart half way."""
    plan = build_plan(DrillConfig(hard_kill_share=0.5, restart_redis=True, seed=5))
    assert any(i.hard for i in plan.interruptions)
    assert any(not i.hard for i in plan.interruptions)
    assert plan.redis_restart_at_seconds == round(plan.sending_seconds / 2, 3)


def test_problems_name_the_flag() -> None:
    """Unusable settings are refused with the flag's name."""
    bad = dataclasses.replace(DrillConfig(), events=0, hard_kill_share=2.0, worker="nocolon")
    problems = " ".join(bad.problems())
    assert "--events" in problems
    assert "--hard-kill-share" in problems
    assert "--worker" in problems
    assert DrillConfig().problems() == []
