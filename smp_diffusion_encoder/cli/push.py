"""``smp-diffusion push FOLDER REPO_ID``: publish a weights folder to the Hugging Face Hub.

The token comes from ``HF_TOKEN`` or ``hf auth login`` (never from the command line, where it would land
in the shell history). Prints the 40-hex commit to pin in code and to record in CHANGELOG.md.
"""

from __future__ import annotations

import argparse

from smp_diffusion_encoder.cli._args import description


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "push",
        help="upload a weights folder (config.json + model.safetensors) to the Hub",
        description=description(__doc__),
    )
    p.add_argument("folder", help="folder written by save_encoder_weights() or save_finetuned()")
    p.add_argument("repo_id", help="Hub model repo, ORG/NAME (created if missing)")
    p.add_argument("--branch", default=None, help="branch to commit to (created if missing; default main)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument(
        "--message", default=None, help='commit message (default: "Upload FOLDER with smp_diffusion_encoder")'
    )
    p.add_argument(
        "--whole-model",
        action="store_true",
        help="the folder is a whole smp model (save_finetuned), not encoder weights",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from smp_diffusion_encoder.hub.push import push_encoder_weights, push_folder

    push = push_folder if args.whole_model else push_encoder_weights
    sha = push(args.folder, args.repo_id, branch=args.branch, private=args.private, commit_message=args.message)
    print(sha)
    print(
        f"pin it: revision={sha!r} (register_hub_weights / pretrained_settings); record "
        f"{args.repo_id}@{sha} in CHANGELOG.md"
    )
    return 0
