"""The simulated beamline IOC: one caproto server with every PV the beamline serves."""
