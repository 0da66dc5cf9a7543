"""How good a model is: ranking metrics, baselines, evaluation on a split, and the public
benchmarks (RentTheRunway, YooChoose, Diginetica) through the same pipeline."""
