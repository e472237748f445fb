"""`difflab diffusers ...`: a native checkpoint to a diffusers folder and back."""

from __future__ import annotations

from typing import Annotated

import typer

diffusers_app = typer.Typer(help="diffusers folders: export a native checkpoint, import one.")


@diffusers_app.command("export")
def export_command(
    checkpoint: Annotated[str, typer.Argument(help="training checkpoint or run folder")],
    out: Annotated[str, typer.Option("--out", help="new folder: transformer/, scheduler/, "
                                                   "difflab.json")],
) -> None:
    """Write a PixArt-form DiT or an MMDiT checkpoint as a diffusers folder."""
    from difflab.interop import require_diffusers
    from difflab.interop.folders import export_diffusers

    require_diffusers()
    manifest = export_diffusers(checkpoint, out)
    typer.echo(f"wrote {out}/ ({', '.join(sorted(manifest.files))})")


@diffusers_app.command("import")
def import_command(
    folder: Annotated[str, typer.Argument(help="diffusers folder (transformer/, scheduler/)")],
    out: Annotated[str, typer.Option("--out", help="new checkpoint folder")],
    text: Annotated[str, typer.Option(help="text encoder name or folder, where the diffusers "
                                           "folder names none")] = "",
) -> None:
    """Write a diffusers PixArt or SD3 transformer folder as a native checkpoint."""
    from difflab.interop import require_diffusers
    from difflab.interop.folders import import_diffusers

    require_diffusers()
    manifest = import_diffusers(folder, out, text=text)
    model = manifest.config["model"]
    fields = model["overrides"]
    typer.echo(f"wrote {out}/ (model.safetensors {manifest.files['model.safetensors'][:12]}; "
               f"preset {model['preset']} with hidden_size {fields['hidden_size']}, depth "
               f"{fields['depth']})")
