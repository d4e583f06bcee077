"""Every default is written once (spotvlm_ros.parameters): the nodes declare exactly the
table's parameters, and config/*.yaml, the launch arguments, the runner's options, the
offline replay, the evaluator's command line and the backends' config dataclasses agree
with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from spotvlm_ros import launch_args, parameters
from spotvlm_ros.parameters import NODE_PARAMETERS, PRESETS, Parameter, default, parameter

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("node", parameters.NODES)
def test_each_node_declares_exactly_the_tables_parameters(node: str) -> None:
    from spotvlm_ros.tools.node_docs import declared_in_source

    declared = declared_in_source(node)
    assert len(declared) == len(set(declared)), f"{node} declares a parameter twice"
    assert sorted(declared) == sorted(p.name for p in NODE_PARAMETERS[node])


@pytest.mark.parametrize("node", parameters.NODES)
def test_config_yaml_holds_the_tables_defaults(node: str) -> None:
    text = (ROOT / "config" / f"{node}.yaml").read_text()
    values = yaml.safe_load(text)["/**"]["ros__parameters"]
    assert values, f"config/{node}.yaml sets nothing"
    differ = {
        name: (value, default(node, name))
        for name, value in values.items()
        if value != default(node, name)
    }
    assert not differ, f"config/{node}.yaml differs from spotvlm_ros.parameters: {differ}"


def test_a_parameter_missing_from_the_table_is_named() -> None:
    with pytest.raises(KeyError, match="svlm_node has no parameter 'max_pixel'"):
        parameter("svlm_node", "max_pixel")


def test_a_default_outside_its_range_is_refused() -> None:
    with pytest.raises(ValueError, match="outside its range"):
        Parameter("rate_hz", 50.0, "", 0.05, 30.0)


def test_launch_arguments_take_the_nodes_defaults() -> None:
    for argument, (node, name) in launch_args.PARAMETER_OF.items():
        text = launch_args.ARGUMENTS[argument][0]
        value = default(node, name)
        expected = ("true" if value else "false") if isinstance(value, bool) else str(value)
        assert text == expected, (argument, node, name)
    # the deadline and the task are every node's
    for node in ("svlm_node", "context_manager"):
        assert default(node, "deadline_s") == float(launch_args.ARGUMENTS["deadline"][0])
    for node in ("svlm_node", "cloud_bridge", "evaluator"):
        assert default(node, "task") == launch_args.ARGUMENTS["task"][0]
        assert default(node, "task_vocabulary") == launch_args.ARGUMENTS["vocabulary"][0]


def test_the_runner_has_an_option_for_every_launch_argument() -> None:
    from spotvlm_ros.runner import launch_arguments, parse_args

    arguments = launch_arguments(parse_args([]), None)
    assert sorted(arguments) == sorted(launch_args.ARGUMENTS)
    for name, (value, _) in launch_args.ARGUMENTS.items():
        if name != "output":  # the runner writes a log per process only with --log-dir
            assert arguments[name] == value, name
    chosen = launch_arguments(
        parse_args(
            ["--structured-output", "--no-autostart", "--log-level", "debug", "--method", "crm"]
        ),
        None,
    )
    assert (chosen["structured_output"], chosen["autostart"]) == ("true", "false")
    assert (chosen["log_level"], chosen["method"]) == ("debug", "crm")


def test_the_launch_file_checks_the_method() -> None:
    values = {name: value for name, (value, _) in launch_args.ARGUMENTS.items()}
    from test.helpers.models import tiny_model_dir

    values.update(model_path=str(tiny_model_dir()), cloud="false", method="fastest")
    with pytest.raises(launch_args.LaunchArgumentError, match="method:='fastest' must be one"):
        launch_args.check(values)
    for offline in ("cloud_only", "distributed_vlm"):
        values["method"] = offline
        with pytest.raises(launch_args.LaunchArgumentError, match="spotvlm-eval"):
            launch_args.check(values)
    for live in ("edge_only", "crm", "crm_ggvr", "spotvlm"):
        values["method"] = live
        launch_args.check(values)
    for baseline in ("adas", "laecips"):  # a choice between the SVLM and the cloud
        values.update(method=baseline, cloud="false")
        with pytest.raises(launch_args.LaunchArgumentError, match="it needs cloud:=true"):
            launch_args.check(values)
        values.update(cloud="true", check_lvlm="false")
        launch_args.check(values)


def test_the_live_baselines_set_one_rule_across_their_nodes() -> None:
    """ADAS and LAECIPS in the live graph: cloud_bridge's upload rule, and what the SVLM's
    side needs of it (skip the offloaded frames; ask the cloud when unsure), with the same
    threshold as the replay."""
    from spotvlm_ros.core.engine import UploadRule
    from spotvlm_ros.evaluation.replay import ReplayConfig

    adas, laecips = PRESETS["adas"].overrides, PRESETS["laecips"].overrides
    assert adas["cloud_bridge"] == {"upload_rule": UploadRule.ADAS.value}
    assert adas["svlm_node"]["skip_offloaded"] is True
    assert laecips["cloud_bridge"] == {"upload_rule": UploadRule.LAECIPS.value}
    assert laecips["svlm_node"]["laecips_threshold"] == ReplayConfig().laecips_threshold > 0
    assert default("cloud_bridge", "upload_rule") == UploadRule.POLICY.value
    assert default("svlm_node", "laecips_threshold") == 0.0
    assert default("cloud_bridge", "adas_probe_s") == ReplayConfig().adas_probe_s
    for name in ("edge_only", "crm", "crm_ggvr", "spotvlm"):
        assert "cloud_bridge" not in PRESETS[name].overrides


def test_presets_set_only_declared_parameters_and_match_their_flags() -> None:
    for preset in PRESETS.values():
        for node, values in preset.overrides.items():
            for name, value in values.items():
                assert type(value) is type(default(node, name)), (preset.name, name)
        if preset.live:
            svlm = preset.overrides["svlm_node"]
            assert (svlm["use_context"], svlm["ggvr"], svlm["gtvr"]) == (
                preset.crm,
                preset.ggvr,
                preset.gtvr,
            )
    # the full method is what a node runs with no preset at all
    spotvlm = PRESETS[parameters.DEFAULT_PRESET].overrides["svlm_node"]
    assert all(default("svlm_node", name) == value for name, value in spotvlm.items())


def test_the_replay_runs_the_presets_with_the_nodes_defaults() -> None:
    from spotvlm_ros.core.context import ContextConfig
    from spotvlm_ros.evaluation.replay import METHODS, ReplayConfig

    assert METHODS is PRESETS
    replay = ReplayConfig()
    assert replay.deadline == default("svlm_node", "deadline_s")
    assert replay.deadline == default("context_manager", "deadline_s")
    assert replay.context_budget == default("svlm_node", "context_budget_tokens")
    assert replay.roi_max_age_s == default("svlm_node", "roi_max_age_s")
    assert replay.history_form == default("svlm_node", "history_form")
    assert replay.question == default("svlm_node", "question")
    assert replay.context == ContextConfig(
        int(default("context_manager", "history_size")),  # type: ignore[arg-type]
        float(default("context_manager", "max_delay_s")),  # type: ignore[arg-type]
    )
    assert replay.upload.mode.value == default("cloud_bridge", "upload_mode")
    assert replay.upload.max_in_flight == default("cloud_bridge", "max_in_flight")
    assert replay.upload.stride == default("cloud_bridge", "upload_stride")


def test_the_evaluators_command_line_takes_the_nodes_defaults() -> None:
    from spotvlm_ros.evaluation import cli

    args = cli.parse_args(["camvid", "frames", "--svlm-model", "m"])
    assert args.max_new_tokens == default("svlm_node", "max_new_tokens")
    assert args.deadline == default("svlm_node", "deadline_s")
    assert args.vocabulary == default("svlm_node", "task_vocabulary")
    assert args.svlm_seconds == "0.3"  # the replay's modelled compute time


def _field_defaults(cls: type) -> dict[str, object]:
    return {
        f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
    }


def test_the_svlm_backends_defaults_are_svlm_nodes() -> None:
    from spotvlm_ros.svlm.qwen import QwenSvlmConfig

    backend = _field_defaults(QwenSvlmConfig)
    for name in (
        "device",
        "dtype",
        "min_pixels",
        "max_pixels",
        "max_new_tokens",
        "min_focus_tokens",
        "focus_stage",
        "focus_margin_tokens",
        "gtvr_mu",
        "gtvr_b",
        "gtvr_alpha",
        "feature_cache_frames",
    ):
        assert backend[name] == default("svlm_node", name), name


def test_the_lvlm_clients_defaults_are_cloud_bridges() -> None:
    from spotvlm_ros.cloud.client import LvlmClientConfig

    client = _field_defaults(LvlmClientConfig)
    renamed = {"timeout": "timeout_s", "max_pixels": "upload_max_pixels"}
    shared = [
        name
        for name in client
        if renamed.get(name, name) in {p.name for p in NODE_PARAMETERS["cloud_bridge"]}
    ]
    assert len(shared) >= 15
    for name in shared:
        value = client[name]
        value = getattr(value, "value", value)  # an enum's text
        assert value == default("cloud_bridge", renamed.get(name, name)), name


def test_the_fleet_simulation_takes_the_graphs_defaults() -> None:
    from spotvlm_ros.tools.fleet_sim import FleetConfig

    fleet = FleetConfig()
    assert fleet.deadline_s == default("context_manager", "deadline_s")
    assert fleet.rate_hz == default("camera_ingest", "rate_hz")
    assert fleet.delta_s == default("context_manager", "max_delay_s")
    assert fleet.timeout_s == default("cloud_bridge", "timeout_s")
    assert fleet.mode.value == default("cloud_bridge", "upload_mode")


def test_max_pixels_means_one_thing_in_every_node() -> None:
    """``max_input_pixels``: a larger frame is refused; ``max_pixels`` / ``upload_max_pixels``:
    the size a model's input is resized to."""
    for node, params in NODE_PARAMETERS.items():
        for p in params:
            if p.name == "max_input_pixels":
                assert "refused" in p.description or "rejected" in p.description, node
            elif "max_pixels" in p.name:
                assert "resized" in p.description, (node, p.name)


def test_a_method_without_the_lvlm_needs_no_lvlm_server() -> None:
    from test.helpers.models import tiny_model_dir
    from test.helpers.servers import free_port

    values = {name: value for name, (value, _) in launch_args.ARGUMENTS.items()}
    values.update(model_path=str(tiny_model_dir()), base_url=f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(launch_args.LaunchArgumentError, match="cannot reach the LVLM server"):
        launch_args.check(values)
    values["method"] = "edge_only"  # no cloud_bridge: nothing to reach
    launch_args.check(values)
    assert not launch_args.uses_cloud(values)


def test_the_local_detector_cannot_serve_gestures() -> None:
    from test.helpers.models import tiny_model_dir
    from test.helpers.servers import free_port

    values = {name: value for name, (value, _) in launch_args.ARGUMENTS.items()}
    port = free_port()  # not 8000, which a server on this machine may hold
    values.update(
        model_path=str(tiny_model_dir()),
        task="gesture",
        start_server="true",
        server_port=str(port),
        base_url=f"http://127.0.0.1:{port}/v1",
    )
    with pytest.raises(launch_args.LaunchArgumentError, match="answers only the objects task"):
        launch_args.check(values)
    values["server_args"] = "--backend qwen --qwen-model /models/qwen"
    launch_args.check(values)
    assert launch_args.detector_vocabulary(values) == "bdd100k"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--latencies", "1,,2"], "'' is not a number"),
        (["--latency-model", "trace"], "needs --latency-trace FILE"),
        (["--latency-model", "random", "--latency-range", "5"], "MIN,MAX"),
        (["--methods", "spotvlm,fastest"], "unknown ['fastest']"),
        (["--deadline", "0"], "outside [0.01, 60]"),
        (["--svlm-seconds", "fast"], "'fast' is not a number"),
        (["--pairs", "a-model"], "is not SVLM=LVLM"),
        (["--vocabulary", "hagrid"], "task 'objects' takes the vocabularies"),
        (["--svlm-model", "/no/model"], "'/no/model' does not exist"),
    ],
)
def test_spotvlm_eval_refuses_bad_arguments_before_any_work(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from spotvlm_ros.evaluation.cli import main
    from test.helpers.models import tiny_model_dir

    bdd = ROOT.parent / "shared" / "data" / "bdd100k_mot"
    assert main(["bdd100k", str(bdd), "--svlm-model", str(tiny_model_dir()), *arguments]) == 2
    assert message in capsys.readouterr().err
