import torch
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split

from robustbench_dice.datasets import Dataset
from robustbench_dice.registry import register_dataset


@register_dataset("breast_cancer")
def breast_cancer() -> Dataset:
    """Wisconsin breast cancer: 569 tumours, 30 features, benign or malignant (scikit-learn, shipped offline)."""
    x, y = load_breast_cancer(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)  # the training split's statistics only

    def features(rows):
        return torch.as_tensor((rows - mean) / std, dtype=torch.float32)

    def labels(values):
        return torch.as_tensor(values, dtype=torch.int64)

    return Dataset("breast_cancer", features(x_train), labels(y_train), features(x_test), labels(y_test), 2)
