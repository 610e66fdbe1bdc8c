"""greedymm: find and cure greedy learning in multi-modal neural networks.

Implements Wu, Jastrzebski, Cho and Geras, "Characterizing and Overcoming the Greedy Nature of Learning in
Multi-modal Deep Neural Networks" (ICML 2022): the conditional utilization rate, the conditional learning
speed, and the balanced multi-modal learning algorithm.
"""

__version__ = "0.1.0"
