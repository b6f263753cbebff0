import subprocess
import sys


def test_train_and_viz_import_without_optional_packages() -> None:
    """`tubemask.train` and `tubemask.viz` load matplotlib, tensorboard and torchcodec only when asked to."""
    code = (
        "import sys, tubemask.train, tubemask.viz\n"
        "heavy = [m for m in ('matplotlib', 'tensorboard', 'torch.utils.tensorboard', 'torchcodec') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_public_names_are_exported() -> None:
    import tubemask.train as train

    assert sorted(train.__all__) == sorted(set(train.__all__))
    for name in train.__all__:
        assert hasattr(train, name), name
