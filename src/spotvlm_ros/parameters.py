"""Every parameter of the graph's nodes, written once: its default, description and range,
and the presets of the paper's variants.

The nodes declare their parameters from this table (:func:`spotvlm_ros.ros.params.declare`
looks each one up by node and name), docs/nodes.md is generated from it, and tests check
config/*.yaml, the launch files' arguments, the runner's options, the offline replay's
defaults and the backends' config dataclasses against it. Where a ROS-free core dataclass
owns a default (the deadline, K and delta, the upload policy, the ROI age), the table takes
it from there. No ROS imports: the launch files and the runner read it without rclpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from spotvlm_ros.core.baselines import ADAS_PROBE_S, LAECIPS_THRESHOLD
from spotvlm_ros.core.context import ContextConfig
from spotvlm_ros.core.engine import InputRules, UploadRule
from spotvlm_ros.core.policy import UploadPolicyConfig
from spotvlm_ros.core.task import DEFAULT_DEADLINE_S, DEFAULT_TASK

Value = bool | int | float | str | list[str]
"""What a ROS parameter of this package holds."""

INT_MAX = 2**31 - 1

DEADLINE_S = DEFAULT_DEADLINE_S
RATE_HZ = 2.0
TASK = DEFAULT_TASK
LVLM_BASE_URL = "http://127.0.0.1:8000/v1"
LVLM_MODEL = "Qwen/Qwen2.5-VL-72B-Instruct"
LVLM_TIMEOUT_S = 10.0
MAX_INPUT_PIXELS = 4096 * 4096
CONTEXT_BUDGET_TOKENS = 96
MAX_NEW_TOKENS = 32
TASK_TEXT = "the task: objects (multi-object recognition), gesture or caption"
VOCABULARY_TEXT = (
    "the task's vocabulary ('' = its default): objects: bdd100k, nuscenes, coco; gesture: "
    "hagrid, ipn; caption: ace"
)
QUESTION_TEXT = "the question asked about every frame ('' = the task's own)"
INPUT_PIXELS_TEXT = "larger frames are refused [px]"


@dataclass(frozen=True)
class Parameter:
    """One declared parameter of a node."""

    name: str
    default: Value
    description: str
    low: float | None = None  # the range of a number, inclusive
    high: float | None = None

    def __post_init__(self) -> None:
        if (self.low is None) != (self.high is None):
            raise ValueError(f"{self.name}: a range needs both ends")
        if (
            self.low is not None
            and self.high is not None
            and isinstance(self.default, (int, float))
            and not self.low <= self.default <= self.high
        ):
            raise ValueError(f"{self.name}: default {self.default} outside its range")


def _p(
    name: str, default: Value, description: str, low: float | None = None, high: float | None = None
) -> Parameter:
    return Parameter(name, default, description, low, high)


_CONTEXT = ContextConfig()
_RULES = InputRules()
_UPLOAD = UploadPolicyConfig()

NODE_PARAMETERS: dict[str, tuple[Parameter, ...]] = {
    "camera_ingest": (
        _p("input_topic", "/camera/image_raw", "camera topic to subscribe to"),
        _p(
            "transport",
            "auto",
            "auto (what is published on input_topic or input_topic/compressed), raw "
            "(sensor_msgs/Image on input_topic) or compressed (CompressedImage on "
            "input_topic/compressed, or on input_topic if that is its type)",
        ),
        _p("rate_hz", RATE_HZ, "frames admitted per second (task rate)", 0.05, 30.0),
        _p("max_input_pixels", MAX_INPUT_PIXELS, "larger frames are rejected [px]", 1, INT_MAX),
        _p(
            "max_future_s",
            1.0,
            "frames stamped further in the future are rejected [s]",
            0.0,
            3600.0,
        ),
        _p(
            "max_age_s",
            10.0,
            "frames older than this on arrival are rejected; 0 disables [s]",
            0.0,
            1e9,
        ),
        _p(
            "no_input_warning_s",
            5.0,
            "warn when no frame has arrived for this long [s]",
            0.5,
            3600.0,
        ),
        _p(
            "frame_listeners",
            ["svlm_node", "context_manager"],
            "nodes (in this node's namespace) whose frame subscriptions must have matched "
            "before the camera is taken (the launch file names the graph's)",
        ),
        _p(
            "frame_listeners_wait_s",
            5.0,
            "wait up to this long for the graph's frame subscribers to match before taking "
            "the camera [s]",
            0.0,
            3600.0,
        ),
    ),
    "svlm_node": (
        _p("model_path", "", "Qwen2.5-VL model folder (or hub id where the hub is reachable)"),
        _p("device", "auto", "auto, cpu, cuda, cuda:N"),
        _p("dtype", "auto", "auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16"),
        _p(
            "min_pixels",
            0,
            "smallest resized image [px]; 0 = the model folder's (preprocessor_config.json)",
            0,
            INT_MAX,
        ),
        _p(
            "max_pixels",
            448 * 448,
            "largest resized image [px], the real-time budget: caps the model folder's own "
            "limit (never raises it); 0 = the folder's",
            0,
            INT_MAX,
        ),
        _p("max_new_tokens", MAX_NEW_TOKENS, "answer length limit [tokens]", 1, 4096),
        _p("min_focus_tokens", 4, "GGVR falls back below this many tokens", 1, 100000),
        _p(
            "focus_stage",
            "lm",
            "where GGVR's focus acts: 'lm' (the encoder sees the whole frame, the LM the ROI "
            "tokens) or 'encoder' (only the vision windows the ROIs touch are encoded)",
        ),
        _p(
            "focus_margin_tokens",
            1,
            "focus_stage encoder: the ROIs grown by this many tokens (28 px of the resized "
            "image) each way, for the motion since the ROIs' frame",
            0,
            1000,
        ),
        _p(
            "encoder_scope",
            "windows",
            "focus_stage encoder: 'windows' encodes every patch of the windows the grown ROIs "
            "touch (only the full-attention blocks differ from the whole frame); 'tokens' "
            "only the grown ROIs' patches (cheaper; the window blocks differ at the borders)",
        ),
        _p("gtvr_mu", 10.0, "GTVR: W_s = sigmoid(mu * s + b)", -1000.0, 1000.0),
        _p("gtvr_b", -5.0, "GTVR: W_s = sigmoid(mu * s + b)", -1000.0, 1000.0),
        _p("gtvr_alpha", 0.5, "GTVR: t' = alpha W_s t + (1 - alpha) t", 0.0, 1.0),
        _p("feature_cache_frames", 24, "frames of features kept for GTVR", 1, 1000),
        _p("task", TASK, TASK_TEXT),
        _p("task_vocabulary", "", VOCABULARY_TEXT),
        _p("question", "", QUESTION_TEXT),
        _p(
            "deadline_s",
            DEADLINE_S,
            "a frame not started within this of its stamp is dropped [s]",
            0.01,
            60.0,
        ),
        _p(
            "use_context",
            _RULES.use_history,
            "give the SVLM the history (context replacement); false: each frame alone "
            "(the edge-only baseline)",
        ),
        _p(
            "laecips_threshold",
            0.0,
            "LAECIPS's gate: an answer whose confidence (probability per token) is below "
            "this asks the cloud (SvlmResult.cloud_requested); 0: never (the laecips preset "
            f"sets {LAECIPS_THRESHOLD:g})",
            0.0,
            1.0,
        ),
        _p(
            "skip_offloaded",
            False,
            "ADAS: a frame cloud_bridge offloaded (spotvlm/uploads) is not answered here "
            "(answered as dropped) unless already started",
        ),
        _p("ggvr", _RULES.ggvr, "grounding-guided token pruning with the cloud's ROIs"),
        _p("gtvr", _RULES.gtvr, "grounding-tracked token reweighting with the cloud's ROIs"),
        _p(
            "roi_max_age_s",
            _RULES.roi_max_age_s,
            "ROIs older than this are not used [s]",
            0.0,
            3600.0,
        ),
        _p(
            "history_form",
            _RULES.history_form,
            "context as 'text' in the prompt or as previous 'chat' turns",
        ),
        _p("max_input_pixels", MAX_INPUT_PIXELS, INPUT_PIXELS_TEXT, 1, INT_MAX),
        _p(
            "context_budget_tokens",
            CONTEXT_BUDGET_TOKENS,
            "the history's budget in the prompt, in this model's own tokens",
            0,
            100000,
        ),
        _p(
            "torch_threads",
            0,
            "CPU threads for torch (0: one fewer than the cores this process may use, at "
            "least 1, leaving a core to the rest of the graph)",
            0,
            256,
        ),
        _p(
            "error_after_s",
            10.0,
            "diagnostics say ERROR once every frame has been dropped or failed for this long [s]",
            0.0,
            3600.0,
        ),
        _p(
            "autostart",
            False,
            "configure and activate by itself at start-up (the launch file sets it)",
        ),
    ),
    "cloud_bridge": (
        _p("base_url", LVLM_BASE_URL, "OpenAI-compatible API root of the LVLM server"),
        _p("model", LVLM_MODEL, "served model name"),
        _p("api_key_env", "", "NAME of the environment variable holding the API key"),
        _p("timeout_s", LVLM_TIMEOUT_S, "per-request timeout [s]", 0.1, 600.0),
        _p("max_in_flight", _UPLOAD.max_in_flight, "requests outstanding at once", 1, 64),
        _p(
            "upload_max_pixels",
            28 * 28 * 1280,
            "uploaded frames are resized to at most this [px]",
            784,
            INT_MAX,
        ),
        _p("jpeg_quality", 90, "JPEG quality of uploads", 1, 100),
        _p("coordinates", "absolute", "box coordinates of the model: absolute or relative_1000"),
        _p("task", TASK, TASK_TEXT),
        _p("task_vocabulary", "", VOCABULARY_TEXT),
        _p(
            "ca_bundle",
            "",
            "PEM file of CA certificates for an https LVLM (empty: the system's); "
            "certificates are always verified",
        ),
        _p(
            "max_tokens",
            512,
            "the reply's token limit (a reply it cuts is reported as truncated)",
            16,
            32768,
        ),
        _p(
            "endpoint_backoff_s",
            2.0,
            "an LVLM replica that fails is skipped this long, doubling per failure [s]",
            0.1,
            600.0,
        ),
        _p(
            "endpoint_max_backoff_s",
            60.0,
            "the longest a failed replica is skipped [s]",
            0.1,
            3600.0,
        ),
        _p(
            "user",
            "",
            "the OpenAI `user` field of every request (what vLLM and gateways log and "
            "rate-limit by); '' = this graph's namespace, e.g. robot1/cam_front",
        ),
        _p(
            "max_reply_bytes",
            256 * 1024,
            "a larger LVLM reply is not read (counted, said): a real VLM's grounding JSON is "
            "a few KB [bytes]",
            1024,
            64 * 2**20,
        ),
        _p(
            "max_rois",
            100,
            "ROIs kept per LVLM reply, the highest-scoring (the rest counted, said); at most "
            "100, what the other nodes take from one message",
            0,
            100,
        ),
        _p(
            "structured_output",
            False,
            "ask for the ROI JSON through response_format with a JSON schema (vLLM, SGLang); "
            "a server that refuses it is asked plainly from then on",
        ),
        _p(
            "upload_rule",
            UploadRule.POLICY.value,
            "which frames go to the cloud: policy (upload_mode, when a frame arrives), adas "
            "(while the cloud is predicted to answer within deadline_s) or laecips (a frame "
            "the SVLM is unsure of, after its answer: SvlmResult.cloud_requested)",
        ),
        _p(
            "deadline_s",
            DEADLINE_S,
            "upload_rule adas: the cloud is used while its predicted round trip is within this [s]",
            0.01,
            60.0,
        ),
        _p(
            "adas_probe_s",
            ADAS_PROBE_S,
            "upload_rule adas: while the cloud is predicted late, one frame is still sent this "
            "often [s]",
            0.1,
            3600.0,
        ),
        _p("upload_mode", _UPLOAD.mode.value, "every_frame, latency_adaptive or fixed_stride"),
        _p("upload_stride", _UPLOAD.stride, "fixed_stride: upload every Nth frame", 1, 1000),
        _p("question", "", QUESTION_TEXT),
        _p("max_input_pixels", MAX_INPUT_PIXELS, INPUT_PIXELS_TEXT, 1, INT_MAX),
        _p(
            "warn_after_s",
            30.0,
            "diagnostics say WARN once every LVLM request has failed for this long [s]",
            0.0,
            3600.0,
        ),
    ),
    "context_manager": (
        _p("history_size", _CONTEXT.max_entries, "K: history turns kept", 1, 64),
        _p(
            "max_delay_s",
            _CONTEXT.delta,
            "delta: the latest an LVLM answer may arrive (and age) to be used [s]",
            0.0,
            3600.0,
        ),
        _p(
            "question",
            "",
            "the question written into each answer ('' = the one its model was asked)",
        ),
        _p("deadline_s", DEADLINE_S, "real-time deadline [s]", 0.01, 60.0),
        _p(
            "publish_overlay",
            True,
            "publish the overlay image and ROI markers (drawn only while subscribed)",
        ),
        _p("frames_kept", 16, "frames kept for overlays", 1, 1000),
        _p(
            "warn_after_s",
            10.0,
            "diagnostics say WARN once every answer has been invalid for this long [s]",
            0.0,
            3600.0,
        ),
        _p(
            "ledger_dir",
            "",
            "where the frames pending an answer are kept for a respawned context_manager to "
            "count as lost ('' = $ROS_HOME/spotvlm, ~/.ros/spotvlm without ROS_HOME)",
        ),
    ),
    "evaluator": (
        _p("task", TASK, TASK_TEXT),
        _p("task_vocabulary", "", VOCABULARY_TEXT),
        _p("report_dir", "", "where report.json/.md go; empty: none"),
        _p("report_note", "", "a line written at the top of the report"),
        _p("overlay_dir", "", "save every overlay image here as PNG"),
    ),
    "bag_player": (
        _p("bag_path", "", "rosbag2 folder (mcap or sqlite3)"),
        _p("rate", 1.0, "playback speed factor", 0.01, 100.0),
        _p("start_offset_s", 0.0, "skip this much of the bag [s]", 0.0, 1e9),
        _p("loop", False, "play again from the start when done"),
        _p("restamp", True, "shift header stamps so the bag starts now"),
        _p(
            "wait_for_subscribers_s",
            10.0,
            "wait up to this long for the camera topics (and ready_topics) to have subscribers [s]",
            0.0,
            3600.0,
        ),
        _p("exit_when_done", False, "shut the node down once the bag has played"),
        _p("linger_s", 2.0, "wait this long after the last message [s]", 0.0, 3600.0),
        _p(
            "ready_topics",
            [""],
            "TOPIC:N entries: also wait for N subscribers on TOPIC (e.g. the graph's nodes)",
        ),
        _p("ready_url", "", "also wait until this URL answers (e.g. an LVLM /health)"),
    ),
}
"""Every node's parameters, in the order it declares them."""

NODES = tuple(NODE_PARAMETERS)


def parameter(node: str, name: str) -> Parameter:
    """The parameter ``name`` of ``node`` (a KeyError names both if it is not in the table)."""
    for p in NODE_PARAMETERS[node]:
        if p.name == name:
            return p
    raise KeyError(f"{node} has no parameter {name!r} in spotvlm_ros.parameters")


def default(node: str, name: str) -> Value:
    """The default of ``node``'s parameter ``name``."""
    return parameter(node, name).default


# --- the paper's variants ----------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """One of the paper's variants: which models run and which parts of SpotVLM are on.

    ``overrides`` are the node parameters it sets in the live graph (after config/<node>.yaml,
    before the launch arguments and params_file); the replay reads the flags."""

    name: str
    description: str
    svlm: bool
    lvlm: bool
    crm: bool = False
    ggvr: bool = False
    gtvr: bool = False
    overrides: dict[str, dict[str, Value]] = field(default_factory=dict)
    baseline: str = ""  # a baseline's own policy (core.baselines): distributed, adas, laecips

    @property
    def live(self) -> bool:
        """Whether the live graph runs it (``method:=``): every preset with the SVLM (the
        baselines ADAS and LAECIPS through their upload rules); cloud-only and Distributed
        VLM are offline only (an OpenAI-compatible server takes images, not features)."""
        return self.svlm


def _preset(
    name: str,
    description: str,
    *,
    svlm: bool,
    lvlm: bool,
    crm: bool,
    ggvr: bool,
    gtvr: bool,
    baseline: str = "",
) -> Preset:
    overrides: dict[str, dict[str, Value]] = {}
    if svlm:
        overrides["svlm_node"] = {"use_context": crm, "ggvr": ggvr, "gtvr": gtvr}
    if baseline == "adas":
        overrides["svlm_node"]["skip_offloaded"] = True
        overrides["cloud_bridge"] = {"upload_rule": UploadRule.ADAS.value}
    if baseline == "laecips":
        overrides["svlm_node"]["laecips_threshold"] = LAECIPS_THRESHOLD
        overrides["cloud_bridge"] = {"upload_rule": UploadRule.LAECIPS.value}
    return Preset(name, description, svlm, lvlm, crm, ggvr, gtvr, overrides, baseline)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _preset(
            "edge_only",
            "the SVLM alone, each frame without context",
            svlm=True,
            lvlm=False,
            crm=False,
            ggvr=False,
            gtvr=False,
        ),
        _preset(
            "cloud_only",
            "the LVLM alone: every frame uploaded, its answer counts if in time",
            svlm=False,
            lvlm=True,
            crm=False,
            ggvr=False,
            gtvr=False,
        ),
        _preset(
            "crm",
            "SVLM + LVLM, context replacement only",
            svlm=True,
            lvlm=True,
            crm=True,
            ggvr=False,
            gtvr=False,
        ),
        _preset(
            "crm_ggvr",
            "context replacement and grounding-guided token pruning",
            svlm=True,
            lvlm=True,
            crm=True,
            ggvr=True,
            gtvr=False,
        ),
        _preset(
            "spotvlm",
            "the whole method: CRM + GGVR + GTVR",
            svlm=True,
            lvlm=True,
            crm=True,
            ggvr=True,
            gtvr=True,
        ),
        _preset(
            "distributed_vlm",
            "Distributed VLM (Li et al. 2025): the LVLM's vision encoder on the edge, its "
            "features uploaded, the LLM in the cloud answers",
            svlm=False,
            lvlm=True,
            crm=False,
            ggvr=False,
            gtvr=False,
            baseline="distributed",
        ),
        _preset(
            "adas",
            "ADAS (Hu et al. 2024b), a proxy: offload only while the cloud is predicted to "
            "answer in time, else the SVLM; no context transfer",
            svlm=True,
            lvlm=True,
            crm=False,
            ggvr=False,
            gtvr=False,
            baseline="adas",
        ),
        _preset(
            "laecips",
            "LAECIPS (Hu et al. 2024): the SVLM first; a frame it is unsure of (confidence "
            "below a threshold) goes to the cloud, whose answer replaces it if in time",
            svlm=True,
            lvlm=True,
            crm=False,
            ggvr=False,
            gtvr=False,
            baseline="laecips",
        ),
    )
}
"""edge-only, cloud-only, SpotVLM with its ablations (spotvlm = CRM + GGVR + GTVR), and the
paper's baselines (ADAS and LAECIPS also live; Distributed VLM offline only)."""

DEFAULT_PRESET = "spotvlm"
