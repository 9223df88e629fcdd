"""The self-cascade (SPEC 1-2, 7): a base stage, then for each higher stage decode, resize, re-encode,
restart from a noised latent and denoise with scale fusion, blending in the skip residual."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from freescale import vae_transitions
from freescale.conditioning import Conditioning, encode_conditioning
from freescale.detail_mask import cosine_exponent, load_binary_mask
from freescale.freeu import freeu_applied
from freescale.progress import Progress
from freescale.random_draws import keyed_generator, keyed_normal
from freescale.render_config import RenderConfig
from freescale.scale_fusion import scale_fusion


def cosine_factor(timestep: float, num_train_timesteps: int, exponent: torch.Tensor | float) -> torch.Tensor:
    """c = (0.5 * (1 + cos(pi * (T - t) / T))) ** exponent, in float64 (a number or a per-position map)."""
    base = 0.5 * (1 + math.cos(math.pi * (num_train_timesteps - float(timestep)) / num_train_timesteps))
    return torch.as_tensor(base, dtype=torch.float64) ** torch.as_tensor(exponent, dtype=torch.float64)


def restart_latents(scheduler, x0: torch.Tensor, noise: torch.Tensor, first: int) -> list[torch.Tensor]:
    """z_i = add_noise(x0, eps, t_i) for i >= first (index i - first); call before set_begin_index."""
    return [scheduler.add_noise(x0, noise, t.reshape(1)) for t in scheduler.timesteps[first:]]


@torch.no_grad()
def denoise(
    unet,
    scheduler,
    latents: torch.Tensor,
    cond: Conditioning,
    first_step: int,
    seed: int,
    stage: int,
    before_step: Callable[[int, int], torch.Tensor] | None = None,
    after_step: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """Run steps first_step .. end of an already set schedule. `before_step(i, t)` may replace latents."""
    scheduler.set_begin_index(first_step)
    for i in range(first_step, len(scheduler.timesteps)):
        t = scheduler.timesteps[i]
        if before_step is not None:
            latents = before_step(i, latents)
        batch = torch.cat([latents] * 2) if cond.uses_guidance else latents
        batch = scheduler.scale_model_input(batch, t)
        eps = unet(batch, t, **cond.unet_kwargs(), return_dict=False)[0]
        if cond.uses_guidance:
            uncond, text = eps.chunk(2)
            eps = uncond + cond.guidance * (text - uncond)
        generator = keyed_generator(seed, "sampler", stage, i)
        latents = scheduler.step(eps, t, latents, generator=generator, return_dict=False)[0]
        if after_step is not None:
            after_step(i)
    return latents


class Cascade:
    """One render on one process: holds the model and the config, yields each stage's latents."""

    def __init__(self, model, config: RenderConfig, progress: Progress | None = None):
        self.pipe = model.pipe
        self.native = model.native_size
        self.config = config
        self.progress = progress or Progress(quiet=True)
        self.unet, self.vae, self.scheduler = self.pipe.unet, self.pipe.vae, self.pipe.scheduler
        vae_transitions.prepare_vae(self.vae)
        self.mask = load_binary_mask(config.mask) if config.mask else None

    def run(self) -> list[torch.Tensor]:
        c = self.config
        cond = encode_conditioning(self.pipe, c.prompt, c.negative_prompt, c.guidance, c.stages[0])
        with freeu_applied(self.unet, c.freeu):
            results = [self.base_stage(cond)]
            for stage in range(1, len(c.stages)):
                results.append(self.upper_stage(stage, results[-1], cond))
        return results

    def _report(self, stage: int, first: int) -> Callable[[int], None]:
        steps, num_stages = self.config.steps, len(self.config.stages)
        return lambda i: self.progress.step(stage, num_stages, i, steps, first_step=first)

    def base_stage(self, cond: Conditioning) -> torch.Tensor:
        c = self.config
        h, w = c.stages[0]
        latent_shape = (1, self.unet.config.in_channels, h // 8, w // 8)
        dtype, device = self.unet.dtype, self.unet.device
        if c.image is not None:
            from PIL import Image

            with Image.open(c.image) as image:
                pixels = vae_transitions.from_pil(image, device, self.vae.dtype)
            return vae_transitions.encode(self.vae, pixels, keyed_generator(c.seed, "vae-sample", 0)).to(
                dtype
            )
        self.scheduler.set_timesteps(c.steps, device=device)
        noise = keyed_normal(latent_shape, c.seed, "initial", dtype=dtype, device=device)
        latents = noise * self.scheduler.init_noise_sigma
        return denoise(self.unet, self.scheduler, latents, cond, 0, c.seed, 0, after_step=self._report(0, 0))

    def upper_stage(self, stage: int, previous: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        c = self.config
        size = c.stages[stage]
        dtype, device = self.unet.dtype, self.unet.device
        image = vae_transitions.resize(vae_transitions.decode(self.vae, previous), size)
        x0 = vae_transitions.encode(self.vae, image, keyed_generator(c.seed, "vae-sample", stage)).to(dtype)
        del image
        noise = keyed_normal(tuple(x0.shape), c.seed, "restart-noise", stage, dtype=dtype, device=device)
        self.scheduler.set_timesteps(c.steps, device=device)
        first = c.restart_step
        noised = restart_latents(self.scheduler, x0, noise, first)
        exponent = cosine_exponent(self.mask, tuple(x0.shape[-2:]), c.cosine_scale, c.cosine_scale_bg)
        total = self.scheduler.config.num_train_timesteps

        fusion = scale_fusion(
            self.unet,
            self.native,
            size,
            fast_mode=c.fast_mode,
            dilation=True,
            freeu=None,
            jitter_seed=c.seed,
            blur_channels=c.blur == "3d",
        )
        with fusion as handle:

            def before_step(i: int, latents: torch.Tensor) -> torch.Tensor:
                handle.begin_step(stage, i, dilate=i < c.dilate_tau)
                # Cast first so that a full mask and a plain exponent blend in exactly the same arithmetic.
                factor = cosine_factor(self.scheduler.timesteps[i], total, exponent).to(device, dtype)
                return latents * (1 - factor) + noised[i - first] * factor

            return denoise(
                self.unet,
                self.scheduler,
                noised[0],
                cond,
                first,
                c.seed,
                stage,
                before_step=before_step,
                after_step=self._report(stage, first),
            )


def decode_image(model, latents: torch.Tensor):
    """A stage's latents as an 8-bit PIL image."""
    vae_transitions.prepare_vae(model.pipe.vae)
    return vae_transitions.to_pil(vae_transitions.decode(model.pipe.vae, latents))
