"""Print the package's dependencies for the container image, with CPU-only TensorFlow.

The package depends on `tensorflow`; the image installs `tensorflow-cpu` (the same TensorFlow
without the GPU libraries) instead, and every other dependency exactly as pyproject.toml says.
Usage (Dockerfile): python deploy/image_requirements.py tensorflow-cpu==2.21.0 > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

TENSORFLOW = re.compile(r"^tensorflow(?![\w-])")


def image_requirements(pyproject: Path, tensorflow_cpu: str) -> list[str]:
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [tensorflow_cpu if TENSORFLOW.match(dep) else dep
            for dep in dependencies]


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    print("\n".join(image_requirements(root / "pyproject.toml", sys.argv[1])))
