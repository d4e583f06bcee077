"""ament_python build of spotvlm_ros (the Python code lives under src/spotvlm_ros)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "spotvlm_ros"

setup(
    name=PACKAGE,
    version="0.1.0",
    package_dir={"": "src"},
    packages=find_packages("src", include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={PACKAGE: ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.yaml") + glob("config/*.rviz"))),
        (f"share/{PACKAGE}/config", glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="spotvlm_ros maintainers",
    maintainer_email="maintainers@spotvlm-ros.org",
    description="Context transfer between an on-board and a cloud vision-language model for ROS 2.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            f"spotvlm_doctor = {PACKAGE}.tools.doctor:main",
            f"spotvlm-make-tiny-model = {PACKAGE}.svlm.tiny:main",
            f"spotvlm-lvlm-server = {PACKAGE}.cloud.server:main",
            f"spotvlm_ros = {PACKAGE}.runner:main",
            f"spotvlm-make-bag = {PACKAGE}.data.bag:main",
            f"spotvlm-eval = {PACKAGE}.evaluation.cli:main",
            f"spotvlm-demo = {PACKAGE}.tools.demo:main",
            f"camera_ingest = {PACKAGE}.nodes.camera_ingest:main",
            f"svlm_node = {PACKAGE}.nodes.svlm_node:main",
            f"cloud_bridge = {PACKAGE}.nodes.cloud_bridge:main",
            f"context_manager = {PACKAGE}.nodes.context_manager:main",
            f"evaluator = {PACKAGE}.nodes.evaluator:main",
            f"bag_player = {PACKAGE}.nodes.bag_player:main",
        ],
    },
)
