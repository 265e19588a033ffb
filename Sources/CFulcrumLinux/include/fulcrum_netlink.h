// rtnetlink helpers (issue 6).
#pragma once
