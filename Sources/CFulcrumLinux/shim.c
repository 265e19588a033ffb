#include "CFulcrumLinux.h"
