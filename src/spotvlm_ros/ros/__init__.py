"""ROS glue shared by the nodes: message <-> core conversions, parameters, QoS."""
