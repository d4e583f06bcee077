"""The ROS-free core of spotvlm_ros: context transfer, ROIs, upload policy, arbitration, metrics.

Importable without rclpy or torch; the nodes, the offline evaluator and the LVLM server all
use these implementations.
"""
