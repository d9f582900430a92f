"""The network: the table (``spec``), the oracle that walks it without a framework
(``oracle``), the walk and the public model API the backends share (``model``), weights
(``weights``) and the restricted unpickler for data files (``safepickle``).

Imports nothing itself: ``import common.net.spec`` imports only the table.
"""
