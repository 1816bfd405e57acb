"""Training: the loop (progress bar, JSON-lines metrics, atomic checkpoints, resume, NaN stop,
Ctrl-C) and one recipe per method, each with ``tiny`` / ``cpu`` / ``gpu`` presets.

    from minitransformer.train import make_recipe, train
    recipe = make_recipe("dino", preset="cpu")
    result = train(recipe, "runs/dino")        # result.eval_metrics["knn_acc"]
"""

from .loop import (
    Recipe,
    RunDirectoryLocked,
    TrainingDiverged,
    TrainResult,
    checkpoint_path,
    list_checkpoints,
    load_latest,
    metrics_as_floats,
    read_metrics,
    train,
)
from .recipes import (
    PRESET_NAMES,
    RECIPES,
    BaseRecipe,
    make_recipe,
    recipe_class,
    recipe_from_config,
)

__all__ = [
    "PRESET_NAMES", "RECIPES", "BaseRecipe", "Recipe", "RunDirectoryLocked", "TrainResult",
    "TrainingDiverged",
    "checkpoint_path", "list_checkpoints", "load_latest", "make_recipe", "metrics_as_floats",
    "read_metrics",
    "recipe_class", "recipe_from_config", "train",
]
