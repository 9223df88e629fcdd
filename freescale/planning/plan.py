"""`freescale plan`: the sharding plan and each stage's predicted time, traffic and per-worker memory, from
the cost model, for a render described by its stages, workers and options (nothing is loaded)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from freescale.config.options import default
from freescale.config.sharding_check import check_cfg_parallel, check_stage_bands
from freescale.errors import ConfigError
from freescale.planning.cost_calibration import DeviceCalibration, Link, device_calibration, link_for
from freescale.planning.cost_model import CallCost, unet_call_cost
from freescale.planning.memory_model import activation_bytes, attention_working_set, latent_bytes, vae_bytes
from freescale.planning.model_spec import ModelSpec, model_spec
from freescale.planning.vae_cost import VaeWork, output_work, transition_work
from freescale.tiling.bands import Band, row_bands
from freescale.tiling.stages import Size, scale_counts

if TYPE_CHECKING:
    from freescale.config.render_config import RenderConfig

GIB = 2**30
# The parts of a rank's memory estimate, as printed.
MEMORY_PARTS = {
    "weights": "weights",
    "activations": "activations",
    "gathered_kv": "gathered K/V",
    "window_rows": "window halo",
    "vae": "VAE",
    "persistent": "latents",
}


def memory_breakdown(memory: dict[str, float]) -> str:
    return ", ".join(f"{label} {memory[key] / GIB:.1f}" for key, label in MEMORY_PARTS.items() if memory[key])


@dataclass(frozen=True)
class PlanRequest:
    """Everything a plan depends on besides the model, the device calibration and the link."""

    stages: tuple[Size, ...]  # (height, width) in pixels, base first
    workers: int = 1
    # A render's defaults (freescale.config.options).
    fast_mode: bool = default("fast_mode")
    cfg_parallel: bool = default("cfg_parallel")
    steps: int = default("steps")
    restart: float = default("restart")
    dilate_tau: int = default("dilate_tau")
    guidance: float = default("guidance")
    freeu: bool = default("freeu") is not None
    blur_channels: bool = default("blur") == "3d"
    dtype_bytes: int = 2  # the UNet's element size: 2 for fp16/bf16 on GPUs, 4 for fp32 (CPUs)
    output_stages: tuple[int, ...] = ()  # stages decoded to files; () means the last
    # A video's frames at once (a long clip's chunk): its spatial layers run on every frame (the UNet batch is
    # frames times the guidance batch) and each frame is moved between stages and decoded; the motion modules
    # are not counted.
    frames: int = 1

    @property
    def restart_step(self) -> int:
        return int(self.restart * self.steps)


@dataclass
class RankEstimate:
    rank: int
    band: Band  # latent rows
    tflops_per_step: float
    bytes_per_step: dict[str, int]  # by collective kind, on a dilated step (the larger halos)
    collectives_per_step: int
    compute_s_per_step: float
    comm_s_per_step: float
    vae_s: float  # the transition into this stage (decode, resize, encode of this band)
    memory: dict[str, float]  # bytes by part; the peak is weights + persistent + max(unet, vae)
    compute_measured: bool = False  # compute_s_per_step is this band's measured step, not the model's

    @property
    def peak_bytes(self) -> float:
        m = self.memory
        return (
            m["weights"]
            + m["persistent"]
            + max(m["activations"] + m["gathered_kv"] + m["window_rows"], m["vae"])
        )


@dataclass
class StageEstimate:
    index: int
    size: Size
    latent: tuple[int, int]
    mode: str  # direct (the base stage), freescale or fast
    ranks: int  # ranks sharing the stage (one group's with --cfg-parallel)
    batch: int  # UNet batch per rank
    steps: int  # UNet calls
    dilated_steps: int
    per_rank: list[RankEstimate]
    unet_s: float  # every step, each waiting for the slowest rank
    vae_s: float

    @property
    def seconds(self) -> float:
        return self.unet_s + self.vae_s

    @property
    def step_s(self) -> float:
        return self.unet_s / self.steps if self.steps else 0.0

    @property
    def peak(self) -> RankEstimate:
        return max(self.per_rank, key=lambda r: r.peak_bytes)


@dataclass
class Plan:
    request: PlanRequest
    model: ModelSpec
    device: DeviceCalibration
    link: Link
    stages: list[StageEstimate]
    output_s: float  # decoding the output image(s), each rank its rows
    output_memory: float  # the largest rank's VAE working set for that, bytes
    notes: list[str] = field(default_factory=list)

    @property
    def total_s(self) -> float:
        return sum(s.seconds for s in self.stages) + self.output_s

    @property
    def peak_bytes(self) -> float:
        weights = self.model.weights_bytes(self.request.dtype_bytes)
        return max([s.peak.peak_bytes for s in self.stages] + [weights + self.output_memory])


def make_plan(
    stages: Sequence[Size],
    workers: int = 1,
    *,
    model: ModelSpec | str = "sdxl",
    device: DeviceCalibration | str = "NVIDIA H200",
    link: Link | str = "nvlink",
    fast_mode: bool = PlanRequest.fast_mode,
    cfg_parallel: bool = PlanRequest.cfg_parallel,
    steps: int = PlanRequest.steps,
    restart: float = PlanRequest.restart,
    dilate_tau: int = PlanRequest.dilate_tau,
    guidance: float = PlanRequest.guidance,
    freeu: bool = PlanRequest.freeu,
    blur_channels: bool = PlanRequest.blur_channels,
    dtype_bytes: int | None = None,
    output_stages: Sequence[int] = (),
    frames: int = 1,
) -> Plan:
    """Predict a render of `stages` ((h, w) pixels, base first) on `workers` workers. Nothing is loaded:
    `model` is a ModelSpec or what `model_spec` takes ('sdxl', 'tiny', a directory or a file)."""
    spec = model if isinstance(model, ModelSpec) else model_spec(model)
    calibration = (
        device if isinstance(device, DeviceCalibration) else device_calibration(device, strict=False)
    )
    wire = link if isinstance(link, Link) else link_for(link)
    if dtype_bytes is None:
        dtype_bytes = 4 if calibration.name == "cpu" else 2
    request = PlanRequest(
        tuple(tuple(s) for s in stages), workers, fast_mode, cfg_parallel, steps, restart, dilate_tau,
        guidance, freeu, blur_channels, dtype_bytes, tuple(output_stages), frames,
    )  # fmt: skip
    plan = plan_request(request, spec, calibration, wire)
    if isinstance(device, str) and device != calibration.name:
        plan.notes.insert(0, f"no calibration measured on {device}: times are {calibration.name}'s "
                             "(memory estimates do not depend on the device)")  # fmt: skip
    return plan


def plan_for_config(
    config: RenderConfig,
    workers: int = 1,
    *,
    device: DeviceCalibration | str = "NVIDIA H200",
    link: Link | str = "nvlink",
    cfg_parallel: bool = False,
    model: ModelSpec | None = None,
) -> Plan:
    """The plan of a validated render config (what `freescale render` would run), for preflight."""
    c = config
    spec = model or model_spec(c.model, c.model_config)
    name = device.name if isinstance(device, DeviceCalibration) else device
    dtype = {"fp32": 4, "fp16": 2, "bf16": 2}.get(c.dtype or "", 4 if name == "cpu" else 2)
    outputs = tuple(range(len(c.stages))) if c.save_stages else ()
    return make_plan(
        c.stages, workers, model=spec, device=device, link=link, fast_mode=c.fast_mode,
        cfg_parallel=cfg_parallel, steps=c.steps, restart=c.restart, dilate_tau=c.dilate_tau,
        guidance=c.guidance, freeu=c.freeu is not None, blur_channels=c.blur == "3d", dtype_bytes=dtype,
        output_stages=outputs, frames=min(c.frames, c.chunk_frames) if c.is_video else 1,
    )  # fmt: skip


def plan_request(request: PlanRequest, spec: ModelSpec, device: DeviceCalibration, link: Link) -> Plan:
    r = request
    if r.workers < 1:
        raise ConfigError(f"--workers {r.workers} must be at least 1")
    if r.cfg_parallel:
        check_cfg_parallel(r.workers, r.guidance)
    if not r.stages:
        raise ConfigError("no stages to plan")
    # Not check_sharding's rank count: a plan may give ranks empty bands (preflight searches worker counts).
    check_stage_bands(r.stages, spec.unet.align, spec.vae_scale)
    stages = [_base_stage(r, spec, device)]
    for index in range(1, len(r.stages)):
        stages.append(_upper_stage(r, spec, device, link, index))
    output_s, output_memory = _output_decode(r, spec, device)
    plan = Plan(r, spec, device, link, stages, output_s, output_memory)
    plan.notes = _notes(plan)
    return plan


def _persistent(spec: ModelSpec, r: PlanRequest, index: int, band_rows: int) -> float:
    """Latents a rank keeps through a stage: earlier stages' (whole), the restart targets of its band
    for every remaining step, and the stage's full keyed noise draws."""
    channels, scale = spec.unet.in_channels, spec.vae_scale
    earlier = sum(latent_bytes(channels, h // scale, w // scale, r.dtype_bytes) for h, w in r.stages[:index])
    h, w = r.stages[index]
    steps = r.steps - (r.restart_step if index else 0)
    targets = steps * latent_bytes(channels, band_rows, w // scale, r.dtype_bytes) if index else 0
    noise = 2 * latent_bytes(channels, h // scale, w // scale, 4)
    return (earlier + targets + noise) * r.frames


def _base_stage(r: PlanRequest, spec: ModelSpec, device: DeviceCalibration) -> StageEstimate:
    """Rank 0 denoises the base stage alone, with plain attention and the whole guidance batch."""
    h, w = r.stages[0]
    latent = (h // spec.vae_scale, w // spec.vae_scale)
    batch = (2 if r.guidance > 1.0 else 1) * r.frames
    cost = unet_call_cost(spec.unet, latent, [(0, latent[0])], 0, batch=batch, mode="direct",
                          counts=(1, 1), freeu=r.freeu, dtype_bytes=r.dtype_bytes)  # fmt: skip
    memory = {
        "weights": float(spec.weights_bytes(r.dtype_bytes)),
        "activations": activation_bytes(device, spec.unet, "direct", cost.pixels, r.dtype_bytes),
        "gathered_kv": 0.0,
        "window_rows": 0.0,
        "vae": 0.0,
        "persistent": float(_persistent(spec, r, 0, latent[0])),
    }
    rank = _rank(0, (0, latent[0]), cost, device, None, "direct", 0.0, memory)
    return StageEstimate(
        0, (h, w), latent, "direct", 1, batch, r.steps, 0, [rank], r.steps * rank.compute_s_per_step, 0.0
    )


def _rank(
    index: int,
    band: Band,
    dilated: CallCost,
    device: DeviceCalibration,
    link: Link | None,
    mode: str,
    vae_s: float,
    memory: dict[str, float],
    measured_s: float | None = None,
) -> RankEstimate:
    comm = dilated.comm_seconds(link) if link is not None else 0.0
    compute = dilated.compute_seconds(device, mode) if measured_s is None else measured_s
    return RankEstimate(
        rank=index, band=band, tflops_per_step=dilated.flops / 1e12, bytes_per_step=dict(dilated.bytes_sent),
        collectives_per_step=sum(dilated.calls.values()), compute_s_per_step=compute, comm_s_per_step=comm,
        vae_s=vae_s, memory=memory, compute_measured=measured_s is not None,
    )  # fmt: skip


def _upper_stage(
    r: PlanRequest, spec: ModelSpec, device: DeviceCalibration, link: Link, index: int
) -> StageEstimate:
    size, previous = r.stages[index], r.stages[index - 1]
    latent = (size[0] // spec.vae_scale, size[1] // spec.vae_scale)
    counts = scale_counts(size, spec.native_size)
    group = r.workers // 2 if r.cfg_parallel else r.workers
    batch = (1 if r.cfg_parallel or r.guidance <= 1.0 else 2) * r.frames
    bands = row_bands(latent[0], group, spec.unet.align)
    mode = "fast" if r.fast_mode else "freescale"
    steps = r.steps - r.restart_step
    dilated_steps = max(0, min(r.dilate_tau, r.steps) - r.restart_step)
    vae_dtype = spec.vae_dtype_bytes(r.dtype_bytes)
    ranks, slowest = [], [0.0, 0.0]
    for rank, band in enumerate(bands):
        costs = []
        for dilate in (True, False):
            cost = unet_call_cost(spec.unet, latent, bands, rank, batch=batch, mode=mode, counts=counts,
                                  dilate=dilate, freeu=r.freeu, dtype_bytes=r.dtype_bytes,
                                  blur_channels=r.blur_channels)  # fmt: skip
            if r.cfg_parallel:  # partners swap their half of the prediction every step
                band_bytes = latent_bytes(spec.unet.out_channels, band[1] - band[0], latent[1], r.dtype_bytes)
                cost.send("cfg_swap", band_bytes * r.frames)
            costs.append(cost)
        work = (
            transition_work(previous, size, band, spec.vae_tile, spec.vae_scale)
            if band[1] > band[0]
            else None
        )
        vae_s = _vae_seconds(device, work) * r.frames  # frame after frame, one frame's working set
        kv, borrowed = attention_working_set(
            spec.unet, latent, bands, rank, batch, max(counts), r.dtype_bytes
        )
        memory = {
            "weights": float(spec.weights_bytes(r.dtype_bytes)),
            "activations": activation_bytes(device, spec.unet, mode, costs[0].pixels, r.dtype_bytes),
            "gathered_kv": float(kv),
            "window_rows": float(borrowed),
            "vae": vae_bytes(device, work, (previous[1], size[1]), spec.vae_tile, vae_dtype) if work else 0.0,
            "persistent": float(_persistent(spec, r, index, band[1] - band[0])),
        }
        measured = device.measured_band_seconds(
            spec.unet.key, latent, len(bands), rank, mode, batch, r.dtype_bytes, r.freeu
        )
        estimate = _rank(rank, band, costs[0], device, link, mode, vae_s, memory, measured)
        ranks.append(estimate)
        slowest[0] = max(slowest[0], estimate.compute_s_per_step + estimate.comm_s_per_step)
        slowest[1] = max(slowest[1], estimate.compute_s_per_step + costs[1].comm_seconds(link))
    unet_s = dilated_steps * slowest[0] + (steps - dilated_steps) * slowest[1]
    vae_s = max(rank.vae_s for rank in ranks)
    return StageEstimate(index, size, latent, mode, group, batch, steps, dilated_steps, ranks, unet_s, vae_s)


def _vae_seconds(device: DeviceCalibration, work: VaeWork | None) -> float:
    if work is None or device.vae is None:
        return 0.0
    v = device.vae
    return (
        work.decode_latent_pixels * v.decode_seconds_per_latent_pixel
        + work.encode_pixels * v.encode_seconds_per_pixel
    )


def _output_decode(r: PlanRequest, spec: ModelSpec, device: DeviceCalibration) -> tuple[float, float]:
    """Each of all the workers decodes its rows of every output image (whole latent rows, evenly)."""
    seconds, memory = 0.0, 0.0
    vae_dtype = spec.vae_dtype_bytes(r.dtype_bytes)
    for index in r.output_stages or (len(r.stages) - 1,):
        size = r.stages[index]
        rows = size[0] // spec.vae_scale
        bands = row_bands(rows, min(r.workers, rows), 1)
        works = [output_work(size, (a * spec.vae_scale, b * spec.vae_scale), spec.vae_tile, spec.vae_scale)
                 for a, b in bands]  # fmt: skip
        seconds += max(_vae_seconds(device, w) for w in works) * r.frames
        memory = max(
            [memory] + [vae_bytes(device, w, (size[1], size[1]), spec.vae_tile, vae_dtype) for w in works]
        )
    return seconds, memory


def _notes(plan: Plan) -> list[str]:
    d, link = plan.device, plan.link
    notes = [
        f"time: calibrated on {d.name} ({', '.join(d.sources)}); link {link.name}: {link.gbps:g} GB/s, "
        f"{link.latency_us:g} us per collective (assumed; collectives do not overlap compute)",
        "not included: model loading and worker start-up, prompt encoding, the scheduler's per-step "
        "arithmetic outside the UNet, gathering each stage's latents",
        "local windows are taken unjittered (a step's jitter moves them by at most 1/8 window)",
    ]
    for stage in plan.stages:
        measured, ranks = sum(r.compute_measured for r in stage.per_rank), len(stage.per_rank)
        where = f"measured on {d.name} (bench/band_compute.py)"
        if measured == ranks:
            notes.append(f"stage {stage.index}: compute of every band {where}")
        elif measured:
            notes.append(
                f"stage {stage.index}: compute of {measured} of {ranks} bands {where}, the others modelled"
            )
    if d.vae is None:
        notes.append("VAE transitions: no calibration for this device, counted as 0 s and 0 bytes")
    return notes
