// Packet-plane helpers (issue 5).
#pragma once
