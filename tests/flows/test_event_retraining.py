"""Retraining on events, the parts that need no running chain: the event a version change makes (none when the md5 is
unchanged), prefect.yaml's triggers validated and matched with Prefect's own schemas, and their parameters rendered by
Prefect's own templating into what the expert flow accepts. The chain on a real server: test_event_chain.py."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
import yaml

from flows.events import (
    DATA_VERSIONED,
    DOMAIN_LABEL,
    PROFILE_LABEL,
    DataVersionChange,
    announce_data_versions,
    data_event,
    data_resource_id,
    ledger_path,
    read_ledger,
    version_change,
)
from flows.outcomes import Outcome
from tasks.core.config import REPO_ROOT
from tests.flows.entrypoints import load_entrypoint


def _versioned(domain: str, md5: str, status: str = "completed") -> Outcome:
    result = {"md5": md5, "owner": "code-owner", "tracked_by": f"data/{domain}.dvc", "remote_url": "../remotes/x"}
    return Outcome("data", "version_domain", domain, status, 0.1, result=result if status != "failed" else {})


@pytest.fixture(scope="module")
def triggers() -> dict[str, list[dict]]:
    """deployment 'flow-entrypoint/name' → its trigger specs, as `prefect deploy` reads them (anchors resolved)."""
    raw = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]
    return {f"{d['entrypoint'].rsplit(':', 1)[1]}/{d['name']}": d.get("triggers", []) for d in raw}


def _received(spec: dict) -> object:
    from prefect.server.events.schemas.events import ReceivedEvent

    return ReceivedEvent(occurred=datetime.now(UTC), id=uuid.uuid4(), **spec)


def _server_trigger(spec: dict) -> object:
    """A prefect.yaml trigger as the automation `prefect deploy` creates from it, in the server's own schema."""
    from prefect.cli.deploy._triggers import _initialize_deployment_triggers
    from prefect.server.events.schemas.automations import Automation

    (trigger,) = _initialize_deployment_triggers("test", [dict(spec)])
    trigger.set_deployment_id(uuid.uuid4())
    core = trigger.as_automation()
    return Automation.model_validate({**core.model_dump(mode="json"), "id": str(uuid.uuid4())})


def _render(automation: object, event: object) -> dict:
    """The RunDeployment action's parameters rendered from the event, by Prefect's own hydration."""
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    (action,) = automation.actions  # type: ignore[attr-defined]
    parameters = dict(action.parameters)
    action._upgrade_v1_templates(parameters)
    return hydrate(parameters, HydrationContext(raise_on_error=True, render_jinja=True, jinja_context={"event": event}))


def test_a_new_md5_is_a_change_with_before_and_after(tmp_profile) -> None:
    change = version_change(tmp_profile, _versioned("code", "md5-new"), "md5-old")
    assert change == DataVersionChange(
        "code", "code-owner", tmp_profile.name, "md5-old", "md5-new", "data/code.dvc", "../remotes/x"
    )
    first = version_change(tmp_profile, _versioned("code", "md5-new"), None)
    assert first is not None and first.md5_before is None  # never announced: the first version starts a training


def test_an_unchanged_or_failed_version_is_no_change(tmp_profile) -> None:
    assert version_change(tmp_profile, _versioned("code", "same"), "same") is None
    assert version_change(tmp_profile, _versioned("code", "x", status="failed"), "old") is None
    assert version_change(tmp_profile, _versioned("code", "", status="cached"), "old") is None
    other = Outcome("data", "write_card", "code", "completed", 0.1, result={"md5": "new"})
    assert version_change(tmp_profile, other, "old") is None


def test_the_event_names_the_domain_and_carries_both_md5s(tmp_profile) -> None:
    change = version_change(tmp_profile, _versioned("math", "b"), "a")
    assert change is not None
    event = data_event(change)
    assert event["event"] == DATA_VERSIONED
    assert event["resource"]["prefect.resource.id"] == data_resource_id("math") == "flexo.data.math"
    assert event["resource"][DOMAIN_LABEL] == "math" and event["resource"][PROFILE_LABEL] == tmp_profile.name
    assert event["payload"]["md5_before"] == "a" and event["payload"]["md5_after"] == "b"


def test_each_owner_deployment_retrains_on_its_own_data_only(triggers, tiny_profile) -> None:
    expert = load_entrypoint("flows/expert.py:expert")
    for domain in tiny_profile.closed_domains:
        (spec,) = triggers[f"expert/weekly-{domain}"]
        automation = _server_trigger(spec)
        change = DataVersionChange(domain, "o", "tiny", "a", "b", "t", "r")
        event = _received(data_event(change))
        assert automation.trigger.covers(event), domain  # type: ignore[attr-defined]
        parameters = _render(automation, event)
        assert parameters == {"domain": domain, "profile": "tiny"}
        expert.validate_parameters(parameters)
        others = [d for d in tiny_profile.closed_domains if d != domain]
        stranger = _received(data_event(DataVersionChange(others[0], "o", "tiny", "a", "b", "t", "r")))
        assert not automation.trigger.covers(stranger)  # type: ignore[attr-defined]
        assert not automation.trigger.covers(_received({**data_event(change), "event": "flexo.data.other"}))  # type: ignore[attr-defined]


def _completed(flow: str, deployment: str | None) -> dict:
    """A flow run's Completed event as the server emits it (the flow and, for a deployment's run, the deployment as
    related resources)."""
    related = [
        {
            "prefect.resource.id": f"prefect.flow.{uuid.uuid4()}",
            "prefect.resource.role": "flow",
            "prefect.resource.name": flow,
        }
    ]
    if deployment:
        related.append(
            {
                "prefect.resource.id": f"prefect.deployment.{uuid.uuid4()}",
                "prefect.resource.role": "deployment",
                "prefect.resource.name": deployment,
            }
        )
    return {
        "event": "prefect.flow-run.Completed",
        "resource": {"prefect.resource.id": f"prefect.flow-run.{uuid.uuid4()}", "prefect.resource.name": "x"},
        "related": related,
    }


def test_assembly_follows_a_deployed_expert_run_and_evaluation_follows_that_assembly(triggers) -> None:
    (assemble,) = [_server_trigger(s) for s in triggers["assemble/after-retraining"]]
    (evaluate,) = [_server_trigger(s) for s in triggers["evaluate/after-assembly"]]
    covers = lambda a, flow, dep: a.trigger.covers(_received(_completed(flow, dep)))  # noqa: E731
    assert covers(assemble, "expert", "weekly-code")
    assert not covers(assemble, "expert", None)  # an expert subflow of `flexo run`: the pipeline assembles itself
    assert not covers(assemble, "assemble", "weekly-code")
    assert covers(evaluate, "assemble", "after-retraining")
    assert not covers(evaluate, "assemble", "on-demand")  # a manual assembly is not evaluated behind the user's back
    assert not covers(evaluate, "assemble", None)
    for automation in (assemble, evaluate):
        (action,) = automation.actions  # type: ignore[attr-defined]
        assert action.parameters == {"profile": "{{ flow_run.parameters.profile }}"}  # the profile the chain began in


def test_no_trigger_outside_the_retraining_chain(triggers) -> None:
    with_triggers = {name for name, specs in triggers.items() if specs}
    assert with_triggers == {n for n in triggers if n.startswith("expert/weekly-")} | {
        "assemble/after-retraining",
        "evaluate/after-assembly",
    }


def test_announcing_records_the_md5_and_an_unchanged_rerun_announces_nothing(tmp_profile, prefect_harness) -> None:
    first = announce_data_versions(tmp_profile, [_versioned("code", "m1"), _versioned("news", "n1", "failed")])
    assert [(c.domain, c.md5_before, c.md5_after) for c in first] == [("code", None, "m1")]
    assert read_ledger(tmp_profile) == {"code": "m1"}
    assert announce_data_versions(tmp_profile, [_versioned("code", "m1", "cached")]) == []
    second = announce_data_versions(tmp_profile, [_versioned("code", "m2")])
    assert [(c.md5_before, c.md5_after) for c in second] == [("m1", "m2")]
    assert read_ledger(tmp_profile) == {"code": "m2"}
    ledger_path(tmp_profile).write_text("[1, 2]")
    with pytest.raises(ValueError, match="delete it"):
        read_ledger(tmp_profile)
