"""`lamina sample CHECKPOINT`: novel sequences from a trained language model (§5.4), one per line."""
from __future__ import annotations

from pathlib import Path

import click

from .errors import LaminaError


def load_language_model(path):
    """(model, vocabulary) of a language-model run: `path` is the run folder (`lamina train --out`) or its
    checkpoint folder. Raises LaminaError saying why when it is not a language model's run."""
    from .language_model import VOCABULARY_FILE, load_vocabulary
    from .run import CHECKPOINT_DIR, TrainedModel

    path = Path(path)
    run_dir = path.parent if (path / VOCABULARY_FILE).is_file() or path.name == CHECKPOINT_DIR else path
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    if not (checkpoint_dir / VOCABULARY_FILE).is_file():
        raise LaminaError(f"{path} is not a language model's run: {checkpoint_dir / VOCABULARY_FILE} does not exist "
                          f"(train one with `lamina train names-char-lm --out DIR` and pass DIR)")
    vocabulary = load_vocabulary(checkpoint_dir)
    return TrainedModel(run_dir).model, vocabulary


@click.command("sample")
@click.argument("checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--n", "n", type=click.IntRange(min=1), default=10, show_default=True, help="How many samples.")
@click.option("--temperature", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Softmax temperature τ: p ∝ exp(z/τ); 0 always takes the most likely token.")
@click.option("--top-k", type=click.IntRange(min=1), default=None,
              help="Draw only among the k most likely tokens (default: all).")
@click.option("--max-length", type=click.IntRange(min=1), default=50, show_default=True,
              help="Stop a sample after this many tokens if it has not drawn <EOS>.")
@click.option("--seed", type=click.IntRange(min=0), default=None, help="Random seed (the same seed, the same samples).")
def sample_command(checkpoint, n, temperature, top_k, max_length, seed):
    """Print N novel sequences sampled from the language model trained in CHECKPOINT (a `lamina train` output
    folder, or its checkpoint/ folder), one per line: x<1> = <EOS>, each drawn token fed back as the next
    input, until <EOS> or --max-length tokens; <UNK> is never drawn."""
    from .language_model import sample

    try:
        model, vocabulary = load_language_model(checkpoint)
    except LaminaError as err:
        raise click.BadParameter(str(err), param_hint="CHECKPOINT") from None
    try:
        texts = sample(model, vocabulary, n=n, temperature=temperature, top_k=top_k, max_length=max_length,
                       seed=seed)
    except LaminaError as err:
        raise click.ClickException(str(err)) from None
    for text in texts:
        click.echo(text)
