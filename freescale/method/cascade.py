"""The self-cascade (SPEC 1-2, 7) on one rank of a group: a base stage, then for each higher stage
decode, resize, re-encode, restart from a noised latent and denoise with scale fusion.

Every rank holds a row band of each upper stage; with one rank the band is the whole latent. A video's
latents are (1, C, F, h, w): each rank holds the same rows of every frame.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch

from freescale.cluster.sharding.band_ops import shard_context_of
from freescale.cluster.sharding.cfg_split import CfgSplit
from freescale.cluster.sharding.shard_group import ShardGroup
from freescale.config.render_config import RenderConfig
from freescale.method import vae_transitions, video_transitions
from freescale.method.band_sampler import BandStep, StepDraw, band_step
from freescale.method.detail_mask import cosine_exponent, load_binary_mask
from freescale.method.freeu import freeu_applied
from freescale.method.random_draws import clip_noise, keyed_normal
from freescale.method.scale_fusion import scale_fusion
from freescale.method.snapshots import CheckpointEvent, CheckpointSink, Snapshot, supports_mid_stage
from freescale.method.temporal_windows import WindowSettings, temporal_windows_applied
from freescale.method.vae_fallback import TileReport, print_warning
from freescale.models.conditioning import Conditioning, encode_conditioning
from freescale.models.schedulers import build_scheduler
from freescale.progress import Progress


def cosine_factor(timestep: float, num_train_timesteps: int, exponent: torch.Tensor | float) -> torch.Tensor:
    """c = (0.5 * (1 + cos(pi * (T - t) / T))) ** exponent, in float64 (a number or a per-position map)."""
    base = 0.5 * (1 + math.cos(math.pi * (num_train_timesteps - float(timestep)) / num_train_timesteps))
    return torch.as_tensor(base, dtype=torch.float64) ** torch.as_tensor(exponent, dtype=torch.float64)


def restart_latents(scheduler, x0: torch.Tensor, noise: torch.Tensor, first: int) -> list[torch.Tensor]:
    """z_i = add_noise(x0, eps, t_i) for i >= first (index i - first), before the stage's first step.

    A sigma-based scheduler's add_noise finds t_i's sigma by value unless a begin index is set, and Karras
    timesteps repeat (e.g. 1, 1, 0): it is told the index i. Alpha-based ones (DDIM) index by t_i itself."""
    indexed = hasattr(scheduler, "set_begin_index")
    noised = []
    for i in range(first, len(scheduler.timesteps)):
        if indexed:
            scheduler.set_begin_index(i)
        noised.append(scheduler.add_noise(x0, noise, scheduler.timesteps[i].reshape(1)))
    return noised


Predictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def guided_predictor(unet, scheduler, cond: Conditioning, cfg: CfgSplit | None = None) -> Predictor:
    """eps(latents, t) with classifier-free guidance; with `cfg` this rank runs only its half of the
    batch and swaps predictions with its partner."""

    def predict(latents: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if not cond.uses_guidance:
            return unet(scheduler.scale_model_input(latents, t), t, **cond.unet_kwargs(), return_dict=False)[
                0
            ]
        if cfg is None:
            batch = scheduler.scale_model_input(torch.cat([latents] * 2), t)
            uncond, text = unet(batch, t, **cond.unet_kwargs(), return_dict=False)[0].chunk(2)
        else:
            batch = scheduler.scale_model_input(latents, t)
            uncond, text = cfg.swap(unet(batch, t, **cond.unet_kwargs(cfg.half), return_dict=False)[0])
        return uncond + cond.guidance * (text - uncond)

    return predict


@torch.no_grad()
def denoise(
    scheduler,
    predict: Predictor,
    latents: torch.Tensor,
    first_step: int,
    seed: int,
    stage: int,
    before_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
    after_step: Callable[[int, torch.Tensor], None] | None = None,
    step: BandStep | None = None,
    band: tuple[int, int, int] | None = None,
) -> torch.Tensor:
    """Steps first_step .. end of an already set schedule; `before_step(i, latents)` may replace latents,
    `after_step(i, latents)` sees the latents step i produced. `latents` are rows band = (start, stop,
    whole latent's rows) of the latent (default: all of it), stepped by `step` (default: for one rank)."""
    if hasattr(scheduler, "set_begin_index"):  # DDIM and PNDM step by timestep or by their own count
        scheduler.set_begin_index(first_step)
    step = band_step(scheduler, 1) if step is None else step
    start, stop, rows = (0, latents.shape[-2], latents.shape[-2]) if band is None else band
    for i in range(first_step, len(scheduler.timesteps)):
        t = scheduler.timesteps[i]
        if before_step is not None:
            latents = before_step(i, latents)
        eps = predict(latents, t)
        latents = step(eps, t, latents, StepDraw(seed, stage, i, (start, stop), rows))
        if after_step is not None:
            after_step(i, latents)
    return latents


class Cascade:
    """One render on one rank: `run()` returns every stage's whole latents, the same on every rank.

    From a `snapshot` it continues where an earlier run stopped. With `checkpoint_every` (the same on
    every rank, as it decides collectives) the latents are gathered every that many steps and at each
    stage end, and world rank 0 hands them to `on_checkpoint`.
    """

    def __init__(
        self,
        model,
        config: RenderConfig,
        progress: Progress | None = None,
        group: ShardGroup | None = None,
        cfg: CfgSplit | None = None,
        snapshot: Snapshot | None = None,
        checkpoint_every: int | None = None,
        on_checkpoint: CheckpointSink | None = None,
        unet=None,
        frame_range: range | None = None,
    ):
        self.pipe = model.pipe
        self.native = model.native_size
        self.config = config
        self.group = group or ShardGroup.single()
        self.cfg = cfg  # with CFG split over two groups, `group` is this rank's half
        self.world = cfg.world if cfg is not None else self.group
        quiet = progress is None or self.world.rank != 0
        self.progress = Progress(quiet=True) if quiet else progress
        # Every rank names the fp16 VAE tiles it redoes in fp32 (see vae_fallback), unless --quiet.
        self.vae_report = TileReport(warn=progress.warn if progress is not None else print_warning)
        # A video render passes the motion UNet built from the pipeline's image UNet and an adapter.
        self.unet = unet if unet is not None else self.pipe.unet
        # --scheduler: a fresh one over the model's config on every rank alike; else the model's own.
        self.vae, self.scheduler = self.pipe.vae, build_scheduler(config.scheduler, self.pipe.scheduler)
        # A video renders frames `frame_range` of its clip (a chunk of a long one; default all of them).
        self.frame_range = (frame_range or range(config.frames)) if config.is_video else None
        self.frames = len(self.frame_range) if config.is_video else None
        self.shard = shard_context_of(self.unet)
        self.mask = load_binary_mask(config.mask) if config.mask else None
        # How this rank steps its band (refuses a sampler that would differ when sharded).
        self.band_step = band_step(self.scheduler, self.group.world)
        self.snapshot = snapshot or Snapshot()
        # Multistep solvers (dpm++2m, unipc) keep history across steps: only stage ends are checkpoints.
        mid_stage = checkpoint_every is not None and supports_mid_stage(self.scheduler)
        self.checkpoint_every = checkpoint_every if mid_stage else None
        self.on_checkpoint = on_checkpoint if self.world.rank == 0 else None

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def run(self) -> list[torch.Tensor]:
        c = self.config
        cond = encode_conditioning(
            self.pipe, c.prompt, c.negative_prompt, c.guidance, c.stages[0], frames=self.frames
        )
        results = [t.to(self.device, self.dtype) for t in self.snapshot.finished]
        with freeu_applied(self.unet, c.freeu, self.shard), self._windows():
            if not results:
                results.append(self._finish(0, self.base_stage(cond)))
            for stage in range(len(results), len(c.stages)):
                results.append(self._finish(stage, self.upper_stage(stage, results[-1], cond)))
        return results

    def _windows(self) -> contextlib.AbstractContextManager:
        """A video's motion modules attend over temporal windows (a clip within one window is unchanged)."""
        c = self.config
        if self.frames is None:
            return contextlib.nullcontext()
        settings = WindowSettings(c.window, c.window_stride, c.window_weights)
        return temporal_windows_applied(self.unet, settings)

    def _noise(self, shape: tuple[int, ...], purpose: str, stage: int, shuffle: bool = True) -> torch.Tensor:
        """The keyed noise of a stage (fp32, on the CPU). A video's is drawn frame by frame for its frames
        of the clip; with --noise shuffle (and `shuffle`) it repeats its first window's (FreeNoise)."""
        c = self.config
        if self.frames is None:
            return keyed_normal(shape, c.seed, purpose, stage)
        windows = (c.window, c.window_stride) if shuffle and c.noise == "shuffle" else None
        frame_shape = (*shape[:2], *shape[3:])
        return clip_noise(frame_shape, self.frame_range, c.seed, purpose, stage, windows)

    def _finish(self, stage: int, latents: torch.Tensor) -> torch.Tensor:
        if self.on_checkpoint is not None:
            self.on_checkpoint(CheckpointEvent(stage, latents.cpu()))
        return latents

    def _resume_point(self, stage: int) -> tuple[int, torch.Tensor] | None:
        """(next step, whole latents) when the snapshot stopped inside this stage."""
        s = self.snapshot
        if s.latents is None or len(s.finished) != stage:
            return None
        return s.step, s.latents.to(self.device, self.dtype)

    def _after_step(self, stage: int, first: int, gather=None) -> Callable[[int, torch.Tensor], None]:
        """Progress, and every `checkpoint_every` steps the whole latents for the checkpoint."""
        steps, num_stages, every = self.config.steps, len(self.config.stages), self.checkpoint_every

        def after(i: int, latents: torch.Tensor) -> None:
            self.progress.step(stage, num_stages, i, steps, first_step=first)
            if every is None or (i + 1) % every or i + 1 == steps:
                return
            whole = gather(latents) if gather is not None else latents
            if self.on_checkpoint is not None:
                self.on_checkpoint(CheckpointEvent(stage, whole.cpu(), step=i + 1))

        return after

    def _latent_shape(self, stage: int) -> tuple[int, ...]:
        h, w = self.config.stages[stage]
        scale = vae_transitions.vae_scale(self.vae)
        frames = () if self.frames is None else (self.frames,)
        return (1, self.unet.config.in_channels, *frames, h // scale, w // scale)

    def base_stage(self, cond: Conditioning) -> torch.Tensor:
        """Rank 0 renders the small base stage unsharded (whole CFG batch); the others receive it."""
        shape = self._latent_shape(0)
        if self.world.rank == 0:
            latents = self._base_latents(cond, shape)
        else:
            latents = torch.empty(shape, dtype=self.dtype, device=self.device)
        return self.world.broadcast(latents.contiguous(), src=0)

    def _base_latents(self, cond: Conditioning, shape: tuple[int, ...]) -> torch.Tensor:
        c = self.config
        self.shard.group = ShardGroup.single()
        self.shard.set_stage(shape[-2:])
        if c.input_image is not None:  # `freescale upscale`: the user's image resized to the base stage
            from freescale.config.user_image import base_stage_pixels

            pixels = base_stage_pixels(c.input_image, c.stages[0], self.device, self.vae.dtype)
            noise = keyed_normal(shape, c.seed, "vae-sample", 0)
            return vae_transitions.encode_image(self.vae, pixels, noise, self.vae_report.of_stage(0)).to(
                self.dtype
            )
        if c.image is not None:
            from freescale.config.input_images import open_image

            with open_image(c.image, "--image") as image:
                pixels = vae_transitions.from_pil(image, self.device, self.vae.dtype)
            noise = keyed_normal(shape, c.seed, "vae-sample", 0)
            return vae_transitions.encode_image(self.vae, pixels, noise, self.vae_report.of_stage(0)).to(
                self.dtype
            )
        if c.input is not None:
            from freescale.inputs.clip_reader import clip_frames

            # A long clip's chunks read on: the frames it shares with the last chunk are still held.
            frames = clip_frames(c.input, self.frame_range.start, self.frame_range.stop, c.chunk_overlap)
            noise = self._noise(shape, "vae-sample", 0, shuffle=False)
            report, first = self.vae_report.of_stage(0), self.frame_range.start
            return video_transitions.encode_clip(self.vae, frames, c.stages[0], noise, report, first).to(
                self.dtype
            )
        self.scheduler.set_timesteps(c.steps, device=self.device)
        first, latents = self._resume_point(0) or (0, None)
        if latents is None:
            noise = self._noise(shape, "initial", 0).to(self.device, self.dtype)
            latents = noise * self.scheduler.init_noise_sigma
        predict = guided_predictor(self.unet, self.scheduler, cond)
        after = self._after_step(0, first)
        return denoise(self.scheduler, predict, latents, first, c.seed, 0, after_step=after)

    def _restart_source(self, stage: int, previous: torch.Tensor, shape: tuple, band) -> torch.Tensor:
        """This rank's band of the upsampled previous stage (SPEC 2.1-2.3): through pixel space, or for a
        video by default each frame's latents resized."""
        c, (a, b) = self.config, band
        if self.frames is not None and c.upsample == "latent":
            return video_transitions.upsampled_latents(previous, shape[-2:])[..., a:b, :]
        noise = self._noise(shape, "vae-sample", stage, shuffle=False)[..., a:b, :]
        report = self.vae_report.of_stage(stage)
        if self.frames is not None:
            return video_transitions.next_stage_frames_band(
                self.vae, previous, c.stages[stage], band, noise, report, self.frame_range.start
            )
        return vae_transitions.next_stage_band(self.vae, previous, c.stages[stage], band, noise, report)

    def upper_stage(self, stage: int, previous: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        c = self.config
        shape = self._latent_shape(stage)
        self.shard.group = self.group
        self.shard.set_stage(shape[-2:])
        a, b = self.shard.band
        x0 = self._restart_source(stage, previous, shape, (a, b)).to(self.device, self.dtype)
        noise = self._noise(shape, "restart-noise", stage).to(self.device, self.dtype)
        self.scheduler.set_timesteps(c.steps, device=self.device)
        first = c.restart_step
        noised = restart_latents(self.scheduler, x0, noise[..., a:b, :], first)
        exponent = cosine_exponent(self.mask, shape[-2:], c.cosine_scale, c.cosine_scale_bg)
        if isinstance(exponent, torch.Tensor):
            exponent = exponent[..., a:b, :]
        total = self.scheduler.config.num_train_timesteps

        fusion = scale_fusion(
            self.unet, self.native, c.stages[stage], fast_mode=c.fast_mode, dilation=True, freeu=None,
            jitter_seed=c.seed, blur_channels=c.blur == "3d", shard=self.shard,
        )  # fmt: skip
        with fusion as handle:

            def before_step(i: int, latents: torch.Tensor) -> torch.Tensor:
                handle.begin_step(stage, i, dilate=i < c.dilate_tau)
                # Cast first so that a full mask and a plain exponent blend in exactly the same arithmetic.
                factor = cosine_factor(self.scheduler.timesteps[i], total, exponent).to(
                    self.device, self.dtype
                )
                return latents * (1 - factor) + noised[i - first] * factor

            def gather(band: torch.Tensor) -> torch.Tensor:
                return self.group.all_gather_rows(band.contiguous(), self.shard.bands, dim=-2)

            start, latents = first, noised[0]
            resume = self._resume_point(stage)
            if resume is not None:
                start, latents = resume[0], resume[1][..., a:b, :]
            predict = guided_predictor(self.unet, self.scheduler, cond, self.cfg)
            band = denoise(
                self.scheduler, predict, latents, start, c.seed, stage,
                before_step=before_step, after_step=self._after_step(stage, start, gather),
                step=self.band_step, band=(a, b, shape[-2]),
            )  # fmt: skip
        return gather(band)
