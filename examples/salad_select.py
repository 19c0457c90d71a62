"""Run one Stage II active-selection round offline (see conf/select.yaml for every option).

    python examples/salad_select.py --config conf/select.yaml workdir=out/select measure.checkpoint=stage1.ckpt

Arguments after the optional ``--config FILE`` are OmegaConf dot-list overrides.
"""

from __future__ import annotations

import argparse
import json
import logging


def main(argv: list[str] | None = None) -> None:
    from omegaconf import OmegaConf

    from nemo_salad.llm.cpu import guard_unified_memory_import

    guard_unified_memory_import()  # before NeMo first imports megatron-core (see its docstring)

    from nemo_salad.selection.cli import merge_overrides, run_select

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="conf/select.yaml", help="YAML config (default: conf/select.yaml)")
    parser.add_argument("overrides", nargs="*", help="dot-list overrides, e.g. selection.gamma=0 (an override of "
                        "measure._target_ replaces the whole measure block)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = run_select(merge_overrides(OmegaConf.load(args.config), args.overrides))
    print(json.dumps({k: result.report["summary"][k] for k in ("selected_items", "selected_total", "selected_unit",
                                                                 "excluded_clusters", "selection_dir")}))
    print(f"report: {result.workdir / 'report.json'} and {result.workdir / 'report.png'}")


if __name__ == "__main__":
    main()
