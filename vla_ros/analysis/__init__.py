"""Analyses of trained policies (the paper's layer-wise visual sensitivity); no ROS."""
