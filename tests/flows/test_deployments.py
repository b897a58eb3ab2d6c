"""prefect.yaml and the work pools: entrypoints load, parameters validate, schedules parse, GPU templates pass Prefect's
own validation and really request a GPU."""

from __future__ import annotations

import copy

import pytest
import yaml

from flows import work_pools
from tasks.core.config import REPO_ROOT
from tasks.core.errors import ConfigError
from tests.flows.entrypoints import load_entrypoint


@pytest.fixture(scope="module")
def deployments() -> list[dict]:
    return yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())["deployments"]


def test_every_deployment_loads_validates_and_lands_on_a_created_pool(deployments, tiny_profile) -> None:
    from prefect.client.schemas.schedules import CronSchedule

    pools = {spec.name for spec in work_pools.pools(tiny_profile)}
    seen = set()
    for dep in deployments:
        flow = load_entrypoint(dep["entrypoint"])
        key = f"{flow.name}/{dep['name']}"
        assert key not in seen, f"duplicate deployment {key}"
        seen.add(key)
        assert dep["enforce_parameter_schema"] is True
        if flow.name != "revoke":  # revoke's domain/version/reason are required at run time
            flow.validate_parameters(dep["parameters"])
        assert dep["work_pool"]["name"] in pools, key
        for schedule in dep["schedules"]:
            CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    owners = tiny_profile.closed_domains
    assert {f"expert/weekly-{d}" for d in owners} <= seen
    assert {f"data/nightly-{d}" for d in owners} <= seen
    assert {"revoke/on-demand", "assemble/on-demand"} <= seen


def test_weekly_retraining_runs_on_the_owners_own_pool(deployments, tiny_profile) -> None:
    for dep in deployments:
        if dep["entrypoint"].endswith(":expert"):
            domain = dep["parameters"]["domain"]
            assert dep["work_pool"]["name"] == work_pools.pool_name(tiny_profile, tiny_profile.domains[domain].owner)


def test_bad_parameters_are_refused(deployments) -> None:
    from prefect.exceptions import ParameterTypeError

    expert = load_entrypoint("flows/expert.py:expert")
    with pytest.raises(ParameterTypeError):
        expert.validate_parameters({"profile": "demo"})  # no domain
    with pytest.raises(ParameterTypeError):
        expert.validate_parameters({"domain": "math", "fail_on_error": {"not": "a bool"}})


def test_gpu_job_templates_pass_prefects_validation_and_request_a_gpu() -> None:
    assert work_pools.check_gpu_templates() == {"docker": 1, "kubernetes": 1}
    rendered = work_pools.validate_template(work_pools.load_template("kubernetes"), {"gpu_count": 4})
    assert work_pools.gpu_request("kubernetes", rendered) == 4
    container = rendered["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 4


def test_broken_templates_are_refused() -> None:
    template = copy.deepcopy(work_pools.load_template("docker"))
    template["job_configuration"]["gpus"] = "{{ undeclared_gpus }}"
    with pytest.raises(ConfigError, match="undeclared_gpus"):
        work_pools.validate_template(template)
    with pytest.raises(ConfigError, match="gpu_count"):
        work_pools.validate_template(work_pools.load_template("kubernetes"), {"gpu_count": 0})


def test_owner_lookup(tiny_profile) -> None:
    assert work_pools.owner_of(tiny_profile, "math") == ("math", tiny_profile.domains["math"].owner)
    assert work_pools.owner_of(tiny_profile, tiny_profile.domains["code"].owner)[0] == "code"
    with pytest.raises(ConfigError, match="choose one of"):
        work_pools.owner_of(tiny_profile, "public")
