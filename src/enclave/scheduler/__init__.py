"""The scheduler core: pure code shared by the live loop and the simulator.

Values in, decisions out, the clock passed in as a number of seconds. Nothing here reads the
wall clock, the database or the network.
"""
