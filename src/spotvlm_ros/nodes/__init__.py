"""The ROS 2 nodes of spotvlm_ros, each a thin shell over the core library and backends."""
