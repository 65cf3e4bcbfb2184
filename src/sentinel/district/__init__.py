"""The district (street office) role: many community boxes on one district broker.

`wire` is the contract between a box and its district; the box's side lives in
sentinel.uplink, the district daemon's in the other modules of this package.
"""
