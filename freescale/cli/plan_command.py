"""`freescale plan`: predict a render's sharding, time and memory from the cost model; loads no model."""

from __future__ import annotations

import argparse

from freescale.errors import ConfigError


def cmd_plan(args: argparse.Namespace) -> int:
    from freescale.config.image_size import check_image_size, image_stages
    from freescale.config.options import default
    from freescale.config.sharding_check import check_sharding
    from freescale.planning.cost_calibration import link_for
    from freescale.planning.model_spec import model_spec
    from freescale.planning.plan import make_plan
    from freescale.planning.plan_format import format_output_fit, format_plan, output_fit, plan_json
    from freescale.planning.preflight import preflight

    if args.device_memory is not None and not args.device_memory > 0:
        raise ConfigError(f"--device-memory {args.device_memory} must be a positive number of GiB")
    spec = model_spec(args.model, args.model_config)
    # The stages and output size `freescale render` would pick (any --size, --print, --aspect).
    size_keys = ("stages", "size", "scale", "stage_rule", "print_size", "landscape", "aspect", "dpi")
    values = {k: getattr(args, k) for k in size_keys if getattr(args, k) is not None}
    stages = image_stages(values, spec.native_size)
    check_image_size(values["image_size"], args.fit, stages[-1])
    output = output_fit(stages[-1], values["image_size"], args.fit, values.get("dpi"))
    # The checks `freescale render` makes, so a plan is only made for a render that would run.
    check_sharding(
        stages, args.workers, args.cfg_parallel, default("guidance"), spec.unet.align, spec.vae_scale
    )
    plan = make_plan(
        stages, args.workers, model=spec, device=args.device,
        link=link_for(args.link, args.link_gbps, args.link_latency_us), fast_mode=args.fast_mode,
        cfg_parallel=args.cfg_parallel, steps=args.steps, restart=args.restart,
    )  # fmt: skip
    print(plan_json(plan, output) if args.json else f"{format_plan(plan)}\n{format_output_fit(output)}")
    if args.device_memory is not None:
        preflight(plan, args.device_memory * 2**30)
        print(f"fits devices of {args.device_memory:g} GiB")
    return 0
