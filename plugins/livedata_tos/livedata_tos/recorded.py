"""Streamer messages recorded in public sources (see the Schwab fact sheet, section 4), kept as data for tests
and for anyone checking a parser against them."""

from __future__ import annotations

# Official guide example (fields 0,1,2,3,4,5,8,10).
GUIDE_L1 = {"data": [{"service": "LEVELONE_EQUITIES", "timestamp": 1714949592301, "command": "SUBS", "content": [
    {"key": "SCHW", "delayed": False, "assetMainType": "EQUITY", "assetSubType": "COE", "cusip": "808513105",
     "1": 76.08, "2": 76.49, "3": 76.44, "4": 3, "5": 1, "8": 5414735, "10": 76.47},
    {"key": "SPY", "delayed": False, "assetMainType": "EQUITY", "assetSubType": "ETF", "cusip": "78462F103",
     "1": 512.3, "2": 512.32, "3": 511.29, "4": 8, "5": 1, "8": 72756709, "10": 512.55}]}]}  # fmt: skip

# schwab-py tests/streaming_test.py recorded MSFT all-fields item (pre-market, delayed).
MSFT = {"key": "MSFT", "delayed": True, "assetMainType": "EQUITY", "assetSubType": "COE", "cusip": "594918104",
  "1": 417.01, "2": 417.08, "3": 417.09, "4": 1, "5": 0, "6": "Z", "7": "Z", "8": 162750, "9": 10, "10": 0, "11": 0,
  "12": 415.81, "13": "Q", "14": False, "15": "Microsoft Corp", "16": "Q", "17": 0, "18": 1.28, "19": 430.82,
  "20": 307.59, "21": 36.09605, "22": 3, "23": 0.72513, "24": 0, "25": "NASDAQ", "26": "2024-05-15 00:00:00.0",
  "27": False, "28": False, "29": 415.81, "30": 408, "31": 0, "32": "Unknown", "33": 417.01, "34": 1715777955574,
  "35": 1715777953982, "36": 1715716801392, "37": 1715777955574, "38": 1715777955574, "39": "BATS", "40": "BATS",
  "41": "XBOS", "42": 0.3078329, "43": 0, "44": 1.2, "45": 0.28859335, "46": 95711793, "47": 0, "48": 0, "49": 1,
  "50": 1.28, "51": 0.3078329}  # fmt: skip

# schwab-py tests/streaming_test.py recorded /ES item (abridged).
ES = {"key": "/ES", "delayed": False, "assetMainType": "FUTURE", "1": 5536.5, "2": 5537, "3": 5536.75, "4": 61,
  "5": 112, "6": "?", "7": "?", "8": 1250270, "9": 2, "10": 1719002947349, "11": 1719002945728, "12": 5550.75,
  "13": 5519, "14": 5544.5, "15": "@", "16": "E-mini S&P 500 Index Futures,Sep-2024,ETH", "17": "?", "18": 5545,
  "19": -7.75, "20": -0.13977816, "21": "XCME", "22": "Normal", "23": 1976987, "24": 5536.75, "25": 0.25,
  "26": 12.5, "27": "/ES", "28": "D,D", "29": "GLBX(de=1640;0=-17001600;1=r-17001600d-15551640;7=d-16401555)",
  "30": False}  # fmt: skip
