"""camera_ingest's warning when frames do not arrive names the likely cause: a publisher on
the very topic it listens on, and nothing arriving, is a frame too large for the transport
(DDS drops it without an error, as an 8000x8000 frame was), not a wrong topic."""

from __future__ import annotations

import pytest

from test.helpers.graph import wait_for


@pytest.mark.parametrize("publisher", [True, False])
def test_the_no_frame_warning_names_the_transport_only_when_someone_publishes(
    publisher: bool,
) -> None:
    import rclpy
    from sensor_msgs.msg import Image

    from spotvlm_ros.nodes.camera_ingest import CameraIngest
    from spotvlm_ros.ros import qos

    if not rclpy.ok():
        rclpy.init()
    node = CameraIngest()
    camera = rclpy.create_node("silence_test_camera")
    try:
        topic = "/silence_test/image_raw"
        if publisher:
            camera.create_publisher(Image, topic, qos.CAMERA)
            wait_for(lambda: node.count_publishers(topic) == 1, 30.0, "the camera publisher")
        node._subscribe(topic, Image)
        message = node._no_input_message(12.0, [])
    finally:
        camera.destroy_node()
        node.destroy_node()
    assert ("has a publisher, yet no frame arrived" in message) is publisher, message
    assert ("32 MiB" in message) is publisher, message
