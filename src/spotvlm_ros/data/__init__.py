"""Labelled sequences from datasets, and their conversion to rosbag2 bags."""
