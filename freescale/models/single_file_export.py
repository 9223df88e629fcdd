"""Writes a diffusers SDXL pipeline as one safetensors file in the original Stability (LDM) checkpoint layout,
the format users download from the web, so the single-file loading path can be tested without one.
The UNet and VAE mappings walk the block structure and serve every family (see sd15_single_file_export)."""

import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import save_file

from freescale.atomic_files import atomic_write

_UNET_PREFIX = "model.diffusion_model."
_VAE_PREFIX = "first_stage_model."
_CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
_OPEN_CLIP_PREFIX = "conditioner.embedders.1.model."

# diffusers ResnetBlock2D parameter names -> LDM ResBlock names (UNet).
_UNET_RESNET_PARTS = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
# diffusers VAE attention names -> LDM AttnBlock names (1x1 convolutions there).
_VAE_ATTENTION_PARTS = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
# diffusers CLIP encoder-layer names -> OpenCLIP residual-block names.
_OPEN_CLIP_LAYER_PARTS = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "self_attn.out_proj": "attn.out_proj",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
}


def _rename(state: dict[str, torch.Tensor], prefixes: dict[str, str]) -> dict[str, torch.Tensor]:
    """Renames every key by its longest matching prefix; a key no prefix covers is a mapping bug."""
    ordered = sorted(prefixes, key=len, reverse=True)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        src = next((p for p in ordered if key == p or key.startswith(p + ".")), None)
        if src is None:
            raise ValueError(f"no original-layout name for parameter {key!r}")
        new_key = prefixes[src] + key[len(src) :]
        if new_key in out:
            raise ValueError(f"two parameters map to the original name {new_key!r}")
        out[new_key] = value
    return out


def _resnet(prefixes: dict[str, str], src: str, dst: str, parts: dict[str, str] | None) -> None:
    if parts is None:
        prefixes[src] = dst
        return
    for diffusers_part, ldm_part in parts.items():
        prefixes[f"{src}.{diffusers_part}"] = f"{dst}.{ldm_part}"


def _unet_prefixes(unet) -> dict[str, str]:
    """diffusers -> LDM prefixes, walked from the UNet's own block structure.

    LDM flattens the UNet into input_blocks / middle_block / output_blocks; each entry is a list of
    [resnet, attention?] or a lone downsampler, and an up block's upsampler joins its last entry.
    """
    per_block = unet.config.layers_per_block
    if not isinstance(per_block, int):
        raise ValueError("only a single int layers_per_block has an original (LDM) layout")
    p: dict[str, str] = {
        "time_embedding.linear_1": "time_embed.0",
        "time_embedding.linear_2": "time_embed.2",
        "add_embedding.linear_1": "label_emb.0.0",
        "add_embedding.linear_2": "label_emb.0.2",
        "conv_in": "input_blocks.0.0",
        "conv_norm_out": "out.0",
        "conv_out": "out.2",
    }
    index = 1
    for b, block in enumerate(unet.down_blocks):
        for j in range(len(block.resnets)):
            _resnet(p, f"down_blocks.{b}.resnets.{j}", f"input_blocks.{index}.0", _UNET_RESNET_PARTS)
            if getattr(block, "attentions", None) is not None:
                p[f"down_blocks.{b}.attentions.{j}"] = f"input_blocks.{index}.1"
            index += 1
        if block.downsamplers is not None:
            p[f"down_blocks.{b}.downsamplers.0.conv"] = f"input_blocks.{index}.0.op"
            index += 1

    mid = unet.mid_block
    _resnet(p, "mid_block.resnets.0", "middle_block.0", _UNET_RESNET_PARTS)
    for k, _ in enumerate(mid.attentions):
        p[f"mid_block.attentions.{k}"] = f"middle_block.{2 * k + 1}"
        _resnet(p, f"mid_block.resnets.{k + 1}", f"middle_block.{2 * k + 2}", _UNET_RESNET_PARTS)

    index = 0
    for b, block in enumerate(unet.up_blocks):
        has_attention = getattr(block, "attentions", None) is not None
        for j in range(len(block.resnets)):
            _resnet(p, f"up_blocks.{b}.resnets.{j}", f"output_blocks.{index}.0", _UNET_RESNET_PARTS)
            if has_attention:
                p[f"up_blocks.{b}.attentions.{j}"] = f"output_blocks.{index}.1"
            index += 1
        if block.upsamplers is not None:
            slot = 2 if has_attention else 1
            p[f"up_blocks.{b}.upsamplers.0.conv"] = f"output_blocks.{index - 1}.{slot}.conv"
    return p


def original_vae_tensors(vae) -> dict[str, torch.Tensor]:
    p: dict[str, str] = {"quant_conv": "quant_conv", "post_quant_conv": "post_quant_conv"}
    for side in ("encoder", "decoder"):
        p[f"{side}.conv_in"] = f"{side}.conv_in"
        p[f"{side}.conv_out"] = f"{side}.conv_out"
        p[f"{side}.conv_norm_out"] = f"{side}.norm_out"
        for k in range(len(getattr(vae, side).mid_block.resnets)):
            _resnet(p, f"{side}.mid_block.resnets.{k}", f"{side}.mid.block_{k + 1}", None)
        for part, ldm_part in _VAE_ATTENTION_PARTS.items():
            p[f"{side}.mid_block.attentions.0.{part}"] = f"{side}.mid.attn_1.{ldm_part}"
    for i, block in enumerate(vae.encoder.down_blocks):
        for j in range(len(block.resnets)):
            _resnet(p, f"encoder.down_blocks.{i}.resnets.{j}", f"encoder.down.{i}.block.{j}", None)
        if block.downsamplers is not None:
            p[f"encoder.down_blocks.{i}.downsamplers.0.conv"] = f"encoder.down.{i}.downsample.conv"
    # LDM numbers decoder levels from the lowest resolution's opposite end: up.{n-1} runs first.
    n = len(vae.decoder.up_blocks)
    for i, block in enumerate(vae.decoder.up_blocks):
        for j in range(len(block.resnets)):
            _resnet(p, f"decoder.up_blocks.{i}.resnets.{j}", f"decoder.up.{n - 1 - i}.block.{j}", None)
        if block.upsamplers is not None:
            p[f"decoder.up_blocks.{i}.upsamplers.0.conv"] = f"decoder.up.{n - 1 - i}.upsample.conv"

    out = _rename(vae.state_dict(), p)
    for key, value in out.items():
        if ".mid.attn_1." in key and key.endswith(".weight") and value.ndim == 2:
            out[key] = value[:, :, None, None]  # linear -> 1x1 conv
    return {k.replace("conv_shortcut", "nin_shortcut"): v for k, v in out.items()}


def hf_text_state(encoder) -> dict[str, torch.Tensor]:
    """State dict with the `text_model.` prefix, which newer transformers drops from CLIPTextModel."""
    state = encoder.state_dict()
    if hasattr(encoder, "text_model"):
        return state
    return {f"text_model.{k}": v for k, v in state.items()}


def _open_clip_tensors(encoder) -> dict[str, torch.Tensor]:
    """HF CLIPTextModelWithProjection -> OpenCLIP text tower (q/k/v fused, projection transposed)."""
    state = hf_text_state(encoder)
    out = {
        "token_embedding.weight": state.pop("text_model.embeddings.token_embedding.weight"),
        "positional_embedding": state.pop("text_model.embeddings.position_embedding.weight"),
        "ln_final.weight": state.pop("text_model.final_layer_norm.weight"),
        "ln_final.bias": state.pop("text_model.final_layer_norm.bias"),
        # OpenCLIP applies x @ text_projection; HF's Linear stores the transpose.
        "text_projection": state.pop("text_projection.weight").T,
    }
    for i in range(encoder.config.num_hidden_layers):
        src, dst = f"text_model.encoder.layers.{i}", f"transformer.resblocks.{i}"
        for kind in ("weight", "bias"):
            qkv = [state.pop(f"{src}.self_attn.{n}_proj.{kind}") for n in "qkv"]
            out[f"{dst}.attn.in_proj_{kind}"] = torch.cat(qkv, dim=0)
            for part, ldm_part in _OPEN_CLIP_LAYER_PARTS.items():
                out[f"{dst}.{ldm_part}.{kind}"] = state.pop(f"{src}.{part}.{kind}")
    if state:
        raise ValueError(f"no OpenCLIP name for parameters {sorted(state)}")
    return out


def original_unet_and_vae_tensors(pipe) -> dict[str, torch.Tensor]:
    """The UNet and VAE of any family's pipeline under their original (LDM) checkpoint names."""
    tensors: dict[str, torch.Tensor] = {}
    unet = _rename(pipe.unet.state_dict(), _unet_prefixes(pipe.unet))
    tensors.update({_UNET_PREFIX + k: v for k, v in unet.items()})
    tensors.update({_VAE_PREFIX + k: v for k, v in original_vae_tensors(pipe.vae).items()})
    return tensors


def sdxl_original_state_dict(pipe: StableDiffusionXLPipeline) -> dict[str, torch.Tensor]:
    """All four networks of the pipeline under their original Stability SDXL checkpoint names."""
    tensors = original_unet_and_vae_tensors(pipe)
    tensors.update({_CLIP_L_PREFIX + k: v for k, v in hf_text_state(pipe.text_encoder).items()})
    tensors.update({_OPEN_CLIP_PREFIX + k: v for k, v in _open_clip_tensors(pipe.text_encoder_2).items()})
    return tensors


def write_single_file(state: dict[str, torch.Tensor], path: str) -> None:
    """Writes `state` to `path` atomically."""
    # safetensors refuses views and shared storage, so every tensor gets its own contiguous copy.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    atomic_write(path, lambda temporary: save_file(tensors, temporary, metadata={"format": "pt"}))


def export_sdxl_single_file(pipe: StableDiffusionXLPipeline, path: str) -> None:
    """Writes `path` atomically."""
    write_single_file(sdxl_original_state_dict(pipe), path)
